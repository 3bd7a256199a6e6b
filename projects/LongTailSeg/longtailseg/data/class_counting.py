"""Counting classes over a registered training split, for ``tools/compute_class_stats.py`` and
for the statistics a config computes on first use (``MODEL.LONG_TAIL.CLASS_STATS = ""``)."""
import json
import logging
import os
from collections import Counter
import multiprocessing

import numpy as np
from PIL import Image
from tqdm import tqdm

from detectron2.data import MetadataCatalog
from detectron2.utils import comm

from ..errors import ClassStatsError
from ..longtail import class_stats as cs
from .datasets import get_dataset_dicts_checked, prepare_dataset
from .labels import check_label_values

logger = logging.getLogger(__name__)


def _count_label_file(job):
    """Pixel histogram (classes 0..C-1) of one label PNG; runs in a worker process."""
    path, num_classes, ignore_label = job
    label = np.asarray(Image.open(path))
    if label.ndim != 2:
        raise ClassStatsError(f"label file {path} is not a single-channel PNG; see datasets/README.md")
    check_label_values(label, num_classes, ignore_label, path)
    hist = np.bincount(label.ravel(), minlength=max(num_classes, 256) if label.dtype == np.uint8 else num_classes)
    return hist[:num_classes]


def _require_train_split(dataset_name):
    if "train" not in dataset_name:
        raise ClassStatsError(
            f"class statistics come from a training split only, but {dataset_name!r} is not one; "
            "pass the *_train dataset (counts of val/test splits would leak into training)"
        )


def count_sem_seg(dataset_name, head_ratio, tail_ratio, num_workers=2, progress=True):
    """Pixels per class over the split's label files, in ``num_workers`` processes."""
    _require_train_split(dataset_name)
    dicts = get_dataset_dicts_checked(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    names = list(metadata.stuff_classes)
    ignore = getattr(metadata, "ignore_label", 255)
    jobs = [(d["sem_seg_file_name"], len(names), ignore) for d in dicts]
    counts = np.zeros(len(names), dtype=np.int64)
    image_counts = np.zeros(len(names), dtype=np.int64)
    bar = dict(total=len(jobs), desc=f"counting pixels of {dataset_name}", disable=not progress)
    if num_workers > 1 and len(jobs) > 1:
        # fork: the workers only need numpy and Pillow, and a spawned worker would re-import torch.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(num_workers) as pool:
            results = pool.imap(_count_label_file, jobs, chunksize=max(1, len(jobs) // (8 * num_workers)))
            for hist in tqdm(results, **bar):
                counts += hist
                image_counts += hist > 0
    else:
        for hist in tqdm(map(_count_label_file, jobs), **bar):
            counts += hist
            image_counts += hist > 0
    groups = cs.split_by_ratio(counts / max(counts.sum(), 1), head_ratio, tail_ratio)
    return cs.ClassStats(
        dataset=dataset_name,
        task="sem_seg",
        class_names=names,
        counts=counts.tolist(),
        image_counts=image_counts.tolist(),
        groups=groups,
        group_rule=f"share of training pixels: head > {head_ratio:g}, tail < {tail_ratio:g}",
        num_images=len(jobs),
    )


def count_lvis(dataset_name, progress=True):
    """Instances and images per category; groups from the json's own r / c / f field."""
    _require_train_split(dataset_name)
    dicts = get_dataset_dicts_checked(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    with open(metadata.json_file) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
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
    )


def stats_from_ade20k_object_info(dataset_name, path, head_ratio, tail_ratio):
    """ADE20K's published per-class pixel Ratio (objectInfo150.txt) in place of our own count."""
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
        groups=cs.split_by_ratio(ratios / ratios.sum(), head_ratio, tail_ratio),
        group_rule=f"objectInfo150 Ratio (renormalised): head > {head_ratio:g}, tail < {tail_ratio:g}",
        num_images=0,
        source=f"Ratio column of {os.path.basename(path)}",
    )


def compute_class_stats(dataset_name, head_ratio=cs.DEFAULT_HEAD_RATIO,
                        tail_ratio=cs.DEFAULT_TAIL_RATIO, num_workers=2, object_info=None,
                        progress=True):
    """Class statistics of a registered training split (sem-seg pixels or LVIS instances)."""
    if object_info:
        return stats_from_ade20k_object_info(dataset_name, object_info, head_ratio, tail_ratio)
    metadata = prepare_dataset(dataset_name)  # one-line error if absent; fills synthetic metadata
    if getattr(metadata, "evaluator_type", None) == "lvis" or hasattr(metadata, "json_file"):
        return count_lvis(dataset_name, progress)
    return count_sem_seg(dataset_name, head_ratio, tail_ratio, num_workers, progress)


def dataset_class_names(dataset_name):
    metadata = MetadataCatalog.get(dataset_name)
    return list(getattr(metadata, "stuff_classes", None) or metadata.thing_classes)


def load_or_compute_class_stats(cfg):
    """The statistics a config uses: ``MODEL.LONG_TAIL.CLASS_STATS`` if set (checked against the
    first training set), else counted once on the main process and cached in
    ``OUTPUT_DIR/class_stats.json``."""
    dataset_name = cfg.DATASETS.TRAIN[0]
    lt = cfg.MODEL.LONG_TAIL
    if lt.CLASS_STATS:
        stats = cs.load(lt.CLASS_STATS)
        cs.check_matches(stats, dataset_class_names(dataset_name), dataset_name, lt.CLASS_STATS)
        return stats
    cache = os.path.join(cfg.OUTPUT_DIR, "class_stats.json")
    if comm.is_main_process():
        stats = None
        if os.path.isfile(cache):
            try:
                stats = cs.load(cache)
                cs.check_matches(stats, dataset_class_names(dataset_name), dataset_name, cache)
                if stats.dataset != dataset_name:
                    stats = None
            except ClassStatsError as e:
                logger.warning(f"recomputing the cached class statistics: {e}")
                stats = None
        if stats is None:
            logger.info(f"counting classes of {dataset_name} (cached in {cache})")
            stats = compute_class_stats(
                dataset_name, lt.HEAD_RATIO, lt.TAIL_RATIO, cfg.DATALOADER.CLASS_STATS_WORKERS
            )
            cs.save(stats, cache)
    comm.synchronize()
    return cs.load(cache)
