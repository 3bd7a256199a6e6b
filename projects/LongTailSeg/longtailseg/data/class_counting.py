"""Class statistics of a registered training split: counting them (``tools/compute_class_stats.py``)
and resolving, once per run, which statistics file a config uses (``resolve_class_stats``).
"""
import hashlib
import logging
import multiprocessing
import signal
import os
import shutil
from collections import Counter

import numpy as np
from tqdm import tqdm

from detectron2.data import MetadataCatalog
from detectron2.utils import comm

from ..errors import ClassStatsError, DatasetError, one_line
from ..longtail import class_stats as cs
from . import published_stats
from .datasets import check_dataset, check_lvis_frequencies, get_dataset_dicts_checked, prepare_dataset
from .labels import check_label_histogram, check_label_values, read_label

logger = logging.getLogger(__name__)
# Splits of this process whose every label was read and checked while counting (the pre-flight
# does not read them again).
LABELS_CHECKED = set()


def _count_label_file(job):
    """Pixel histogram (classes 0..C-1) of one label PNG and its number of pixels (ignored ones
    included); runs in a worker process. The label is read as everywhere else (``read_label``:
    palette indices, a colour file refused) and its values checked on the same histogram, so each
    label is scanned once after decoding."""
    path, num_classes, ignore_label = job
    label = read_label(path)
    if label.dtype.kind == "u":  # 8- and 16-bit PNGs: every value is a bincount index
        hist = np.bincount(label.ravel(), minlength=num_classes)
        check_label_histogram(hist, num_classes, ignore_label, path)
    else:  # signed (32-bit PNG) labels: negative values cannot be binned
        check_label_values(label, num_classes, ignore_label, path)
        hist = np.bincount(label.ravel(), minlength=num_classes)
    return hist[:num_classes], label.size


def _require_train_split(dataset_name):
    if "train" not in dataset_name:
        raise ClassStatsError(
            f"class statistics come from a training split only, but {dataset_name!r} is not one; "
            "pass the *_train dataset (counts of val/test splits would leak into training)"
        )


def count_sem_seg(dataset_name, head_ratio, tail_ratio, num_workers=2, progress=True, any_split=False):
    """Pixels per class over the split's label files, in ``num_workers`` processes (a training
    split only, unless ``any_split``: a histogram to look at, never statistics to train with).

    Groups use each class's share of all label pixels, ignored ones included, which is what
    ADE20K's published Ratio column measures (``class_stats.split_by_ratio``); ``counts`` and the
    frequencies that the methods use are labelled pixels only.
    """
    if not any_split:
        _require_train_split(dataset_name)
    dicts = get_dataset_dicts_checked(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    names = list(metadata.stuff_classes)
    ignore = getattr(metadata, "ignore_label", 255)
    jobs = [(d["sem_seg_file_name"], len(names), ignore) for d in dicts]
    counts = np.zeros(len(names), dtype=np.int64)
    image_counts = np.zeros(len(names), dtype=np.int64)
    present_classes = []  # kept for repeat-factor sampling, so it need not read the labels again
    all_pixels = 0
    bar = dict(total=len(jobs), desc=f"counting pixels of {dataset_name}", disable=not progress)
    if num_workers > 1 and len(jobs) > 1:
        # fork: the workers only need numpy and Pillow, and a spawned worker would re-import torch.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        # SIGTERM's default action in the workers: Pool.terminate() (run when the pool closes)
        # stops them with it, and a forked worker inherits the trainer's stop handler, which
        # leaves SIGTERM to the training process (engine/stops.py) and would hang the close.
        with multiprocessing.get_context(method).Pool(
                num_workers, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
            results = pool.imap(_count_label_file, jobs, chunksize=max(1, len(jobs) // (8 * num_workers)))
            for hist, size in tqdm(results, **bar):
                counts += hist
                image_counts += hist > 0
                present_classes.append(np.flatnonzero(hist).tolist())
                all_pixels += size
    else:
        for hist, size in tqdm(map(_count_label_file, jobs), **bar):
            counts += hist
            image_counts += hist > 0
            present_classes.append(np.flatnonzero(hist).tolist())
            all_pixels += size
    LABELS_CHECKED.add(dataset_name)
    groups = cs.split_by_ratio(counts / max(all_pixels, 1), head_ratio, tail_ratio)
    return cs.ClassStats(
        dataset=dataset_name,
        task="sem_seg",
        class_names=names,
        counts=counts.tolist(),
        image_counts=image_counts.tolist(),
        groups=groups,
        group_rule=(f"share of all training pixels (ignored included): head > {head_ratio:g}, "
                    f"tail <= {tail_ratio:g}"),
        num_images=len(jobs),
        data_fingerprint=sem_seg_fingerprint(dicts),
        extra={"all_pixels": int(all_pixels), "head_ratio": head_ratio, "tail_ratio": tail_ratio,
               "image_classes": {"files": _relative_label_paths([d["sem_seg_file_name"] for d in dicts]),
                                 "classes": present_classes}},
    )


def _relative_label_paths(paths):
    """Label file names relative to their common folder (a copy of the data elsewhere matches)."""
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0]) if paths else ""
    return [os.path.relpath(p, root) for p in paths]


def _present_classes(job):
    hist, _ = _count_label_file(job)
    return np.flatnonzero(hist).tolist()


def classes_per_image(dicts, num_classes, ignore_label, stats=None, num_workers=2):
    """The classes present in each record's label (in ``dicts`` order): from the per-image
    classes the statistics' count kept (``stats.extra["image_classes"]``, matched by label file
    name relative to the labels' common folder), else by reading the labels, in ``num_workers``
    processes (statistics from objectInfo150.txt or written before they kept them)."""
    paths = [d["sem_seg_file_name"] for d in dicts]
    kept = (stats.extra.get("image_classes") if stats is not None else None) or {}
    known = dict(zip(kept.get("files", []), kept.get("classes", [])))
    relative = _relative_label_paths(paths)
    if known and all(name in known for name in relative):
        return [list(known[name]) for name in relative]
    logger.info(f"reading {len(paths)} training labels for their classes (the class statistics "
                "do not list each image's classes)")
    jobs = [(path, num_classes, ignore_label) for path in paths]
    if num_workers > 1 and len(jobs) > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(
                num_workers, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
            return pool.map(_present_classes, jobs, chunksize=max(1, len(jobs) // (8 * num_workers)))
    return [_present_classes(job) for job in jobs]


def count_lvis(dataset_name, progress=True, any_split=False):
    """Instances and images per category; groups from the json's own r / c / f field."""
    if not any_split:
        _require_train_split(dataset_name)
    dicts = get_dataset_dicts_checked(dataset_name)
    metadata = check_dataset(dataset_name)
    categories = check_lvis_frequencies(dataset_name)  # one line if a frequency is missing
    names = list(metadata.thing_classes)
    instances, images = Counter(), Counter()
    for d in tqdm(dicts, desc=f"counting instances of {dataset_name}", disable=not progress):
        ids = [a["category_id"] for a in d.get("annotations", [])]
        instances.update(ids)
        images.update(set(ids))
    return cs.ClassStats(
        dataset=dataset_name,
        task="instances",
        class_names=names,
        counts=[instances[c] for c in range(len(names))],
        image_counts=[images[c] for c in range(len(names))],
        groups=cs.split_by_lvis_frequency([c["frequency"] for c in categories]),
        group_rule="LVIS frequency field: f -> head, c -> body, r -> tail",
        num_images=len(dicts),
        data_fingerprint=lvis_fingerprint(metadata.json_file),
    )


def stats_from_ade20k_object_info(dataset_name, path, head_ratio, tail_ratio):
    """ADE20K's published per-class pixel Ratio (objectInfo150.txt) in place of our own count.

    The groups come from the Ratio column as published (shares of all pixels, not renormalised
    by their sum): with the default thresholds they are DisAlign's [:20], [20:75], [75:].
    """
    metadata = MetadataCatalog.get(dataset_name)
    info = cs.parse_ade20k_object_info(path)
    names = list(metadata.stuff_classes)
    if len(info["ratios"]) != len(names):
        raise ClassStatsError(
            f"{path} lists {len(info['ratios'])} classes but dataset {dataset_name} has "
            f"{len(names)}; use --object-info only with the ADE20K 150-class sets"
        )
    ratios = np.asarray(info["ratios"])
    return cs.ClassStats(
        dataset=dataset_name,
        task="sem_seg",
        class_names=names,
        counts=ratios.tolist(),
        image_counts=info["train_images"],
        groups=cs.split_by_ratio(ratios, head_ratio, tail_ratio),
        group_rule=f"objectInfo150 Ratio as published: head > {head_ratio:g}, tail <= {tail_ratio:g}",
        num_images=0,
        source=f"Ratio column of {os.path.basename(path)}",
        # The ratios are shares of all pixels already (cs.pixel_shares divides by 1).
        extra={"all_pixels": 1.0, "head_ratio": head_ratio, "tail_ratio": tail_ratio},
    )


def compute_class_stats(dataset_name, head_ratio=cs.DEFAULT_HEAD_RATIO,
                        tail_ratio=cs.DEFAULT_TAIL_RATIO, num_workers=2, object_info=None,
                        progress=True, any_split=False):
    """Class statistics of a registered training split (sem-seg pixels or LVIS instances);
    ``any_split`` also counts a validation or test split (``tools/browse_dataset.py``'s histogram)."""
    if object_info:
        return stats_from_ade20k_object_info(dataset_name, object_info, head_ratio, tail_ratio)
    metadata = check_dataset(dataset_name)  # one line if unregistered or its metadata falls short
    if metadata.evaluator_type == "lvis":
        return count_lvis(dataset_name, progress, any_split)
    return count_sem_seg(dataset_name, head_ratio, tail_ratio, num_workers, progress, any_split)


def dataset_class_names(dataset_name):
    metadata = MetadataCatalog.get(dataset_name)
    return list(getattr(metadata, "stuff_classes", None) or metadata.thing_classes)


def sem_seg_fingerprint(dicts):
    """What sem-seg counts are computed from: the label files' names (relative to their common
    folder, so a copy of the data elsewhere matches) and sizes. Reading sizes, not pixels, keeps
    the check cheap; data regenerated or replaced changes it."""
    paths = sorted(d["sem_seg_file_name"] for d in dicts)
    root = os.path.commonpath(paths) if paths else ""
    digest = hashlib.sha1()
    for path in paths:
        digest.update(f"{os.path.relpath(path, root)}:{os.path.getsize(path)}\n".encode())
    return {"label_files": len(paths), "label_root": root, "names_and_sizes_sha1": digest.hexdigest()}


def lvis_fingerprint(json_file):
    """What LVIS counts are computed from: the annotation file's name and size."""
    return {"json_file": os.path.basename(json_file), "json_size": os.path.getsize(json_file)}


def current_fingerprint(dataset_name):
    """The fingerprint of the data ``dataset_name`` has now (lists files, reads no label)."""
    metadata = prepare_dataset(dataset_name)
    if getattr(metadata, "evaluator_type", None) == "lvis" or hasattr(metadata, "json_file"):
        if not os.path.isfile(metadata.json_file):
            raise DatasetError(f"{metadata.json_file} (the annotations of {dataset_name}) does not exist; "
                               "put the dataset under $DETECTRON2_DATASETS (datasets/README.md)")
        return lvis_fingerprint(metadata.json_file)
    return sem_seg_fingerprint(get_dataset_dicts_checked(dataset_name))


def _same_data(fingerprint, current):
    # The root folder is informative only: the same files elsewhere are the same data.
    ignore = {"label_root"}
    return ({k: v for k, v in fingerprint.items() if k not in ignore}
            == {k: v for k, v in current.items() if k not in ignore})


def _usable(path, dataset_name, current=None):
    """(stats, None) when ``path`` holds statistics of ``dataset_name`` (and of the data
    ``current`` fingerprints, when given), else (None, why not)."""
    if not os.path.isfile(path):
        return None, "absent"
    check_dataset(dataset_name)  # a dataset whose class names cannot be read is one line, not "unusable"
    try:
        stats = cs.load(path)
        cs.check_matches(stats, dataset_class_names(dataset_name), dataset_name, path)
    except ClassStatsError as e:
        return None, str(e)
    if stats.dataset != dataset_name:
        return None, f"counted on {stats.dataset}, not {dataset_name}"
    if current is not None and not _same_data(stats.data_fingerprint, current):
        return None, (f"counted from other data ({stats.data_fingerprint or 'no record of it'}) "
                      f"than {dataset_name} has now ({current})")
    return stats, None


def resolve_class_stats(cfg):
    """Decide once which class statistics the run uses and write the path into
    ``cfg.MODEL.LONG_TAIL.CLASS_STATS`` (``cfg`` must not be frozen yet); returns the path.
    (``longtailseg.engine.resolve_class_stats`` calls it when the config's model or evaluation
    needs statistics.)

    * MODEL.LONG_TAIL.CLASS_STATS set: that file, checked against DATASETS.TRAIN[0]'s classes.
    * Otherwise, in order: the ``class_stats.json`` beside a local MODEL.WEIGHTS (the statistics
      of the run that made the weights: stage 2 and ``--eval-only`` reuse them without reading a
      training label) and ``OUTPUT_DIR/class_stats.json``, each when it was counted from the
      data the training split has now (label file names and sizes); else the split is counted, which
      also checks every training label. The result is kept as ``OUTPUT_DIR/class_stats.json``.

    The main process decides and writes; the others wait and read the same path.
    """
    long_tail = cfg.MODEL.LONG_TAIL
    dataset_name = cfg.DATASETS.TRAIN[0]
    if long_tail.CLASS_STATS:
        path = long_tail.CLASS_STATS
        stats = cs.load(path)
        cs.check_matches(stats, dataset_class_names(dataset_name), dataset_name, path)
        if cs.regrouped(stats, long_tail.HEAD_RATIO, long_tail.TAIL_RATIO) is not None:
            # The given file is the run's authority; its groups are used as they are.
            logger.warning(f"{path} groups head / body / tail by other thresholds than "
                           f"MODEL.LONG_TAIL.HEAD_RATIO {long_tail.HEAD_RATIO:g} / TAIL_RATIO "
                           f"{long_tail.TAIL_RATIO:g} ({stats.group_rule}); its groups are used. "
                           "Regenerate it with tools/compute_class_stats.py --head-ratio / --tail-ratio "
                           "to use the config's")
        logger.info(f"class statistics: {path} (MODEL.LONG_TAIL.CLASS_STATS)")
        return path
    cache = os.path.join(cfg.OUTPUT_DIR, "class_stats.json")
    if comm.is_main_process():
        _resolve_into_cache(cfg, dataset_name, cache)
        _regroup_cache(cache, long_tail.HEAD_RATIO, long_tail.TAIL_RATIO)
    comm.synchronize()
    cfg.MODEL.LONG_TAIL.CLASS_STATS = cache
    return cache


def _regroup_cache(cache, head_ratio, tail_ratio):
    """The cached statistics grouped by the config's thresholds: statistics counted (or made
    beside MODEL.WEIGHTS) under other HEAD_RATIO / TAIL_RATIO are regrouped from their counts,
    so that changing the thresholds takes effect without counting again."""
    stats = cs.load(cache)
    regrouped = cs.regrouped(stats, head_ratio, tail_ratio)
    if regrouped is not None:
        cs.save(regrouped, cache)
        sizes = "/".join(str(len(regrouped.groups[g])) for g in cs.GROUP_NAMES)
        logger.info(f"class statistics: {cache} regrouped at head > {head_ratio:g}, tail <= "
                    f"{tail_ratio:g} (MODEL.LONG_TAIL.HEAD_RATIO / TAIL_RATIO): head / body / tail "
                    f"{sizes} classes")


def _resolve_into_cache(cfg, dataset_name, cache):
    # The statistics beside MODEL.WEIGHTS are checked against the data like the cache: a stage 2
    # on training data changed since stage 1 must not reuse stale counts. Without the training
    # data (a model evaluated or drawn elsewhere) they are used unchecked, as the log says.
    try:
        current, no_data = current_fingerprint(dataset_name), None
    except DatasetError as e:
        current, no_data = None, e
    weights = cfg.MODEL.WEIGHTS
    beside_weights = os.path.join(os.path.dirname(weights), "class_stats.json") if weights else ""
    if beside_weights and os.path.isfile(weights) and os.path.abspath(beside_weights) != os.path.abspath(cache):
        stats, why_not = _usable(beside_weights, dataset_name, current)
        if stats is not None:
            os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
            tmp = f"{cache}.tmp{os.getpid()}"
            shutil.copyfile(beside_weights, tmp)
            os.replace(tmp, cache)
            checked = ("counted from the same data" if current is not None else
                       f"not checked against {dataset_name}: {one_line(no_data)}")
            logger.info(f"class statistics: {cache} (copied from {beside_weights}, the run that "
                        f"made MODEL.WEIGHTS; {checked})")
            return
        if why_not != "absent":
            logger.warning(f"not using {beside_weights} (beside MODEL.WEIGHTS): {why_not}")
    if no_data is not None:
        if _use_published(cfg, dataset_name, cache, no_data):
            return
        raise no_data
    stats, why_not = _usable(cache, dataset_name, current)
    if stats is not None:
        logger.info(f"class statistics: {cache} (cached; counted from the same {dataset_name} data)")
        return
    if why_not != "absent":
        logger.warning(f"counting {dataset_name} again instead of using {cache}: {why_not}")
    logger.info(f"counting classes of {dataset_name} (kept in {cache})")
    long_tail = cfg.MODEL.LONG_TAIL
    stats = compute_class_stats(dataset_name, long_tail.HEAD_RATIO, long_tail.TAIL_RATIO,
                                cfg.DATALOADER.CLASS_STATS_WORKERS)
    cs.save(stats, cache)
    logger.info(f"class statistics: {cache} (counted over {stats.num_images} images of {dataset_name})")
    _compare_with_published(stats, dataset_name, long_tail.HEAD_RATIO, long_tail.TAIL_RATIO)


def _use_published(cfg, dataset_name, cache, no_data):
    """Without the training split on disk, the statistics shipped for a real dataset
    (``published_stats``), regrouped for the config's thresholds, kept as ``cache``."""
    published = published_stats.load_published(dataset_name)
    if published is None:
        return False
    long_tail = cfg.MODEL.LONG_TAIL
    stats = published_stats.regrouped(published, long_tail.HEAD_RATIO, long_tail.TAIL_RATIO)
    cs.check_matches(stats, dataset_class_names(dataset_name), dataset_name,
                     published_stats.published_stats_path(dataset_name))
    cs.save(stats, cache)
    logger.info(f"class statistics: {cache} (the statistics shipped for {dataset_name}, {stats.source}; "
                "its training split is not on disk)")
    return True


def _compare_with_published(counted, dataset_name, head_ratio, tail_ratio):
    """Warn when the split on disk does not give the published statistics (a subset, another
    version, relabelled classes): the counted ones are used all the same."""
    published = published_stats.load_published(dataset_name)
    if published is None or published.class_names != counted.class_names:
        return
    problems = published_stats.compare(counted, published_stats.regrouped(published, head_ratio, tail_ratio))
    if problems:
        logger.warning(f"the counted statistics of {dataset_name} differ from the published ones "
                       f"({published.source}): {'; '.join(problems)}; using the counted ones")
