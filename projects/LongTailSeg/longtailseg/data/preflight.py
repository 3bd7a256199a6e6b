"""Checks of the data a run will read, done before its first iteration.

Each finds in seconds what would otherwise stop a run after hours of training or after a whole
inference pass: an empty or incomplete split, a class count that is not the dataset's, an
out-of-range or colour label (training labels too when no counting read them), an image the
dataset's loader would drop, LVIS categories without the frequency the evaluator groups by.
"""
import logging
import multiprocessing
import signal
import os

from detectron2.data import MetadataCatalog

from ..errors import ConfigError, DatasetError, one_line
from .datasets import check_lvis_frequencies, get_dataset_dicts_checked, is_sem_seg_dataset, prepare_dataset
from .class_counting import LABELS_CHECKED
from .labels import check_label_file

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _is_lvis(metadata):
    return getattr(metadata, "evaluator_type", None) == "lvis" or hasattr(metadata, "json_file")


def check_num_classes(cfg, dataset_name):
    metadata = prepare_dataset(dataset_name)
    if is_sem_seg_dataset(dataset_name):
        key, value, names = "MODEL.SEM_SEG_HEAD.NUM_CLASSES", cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, "stuff_classes"
    else:
        key, value, names = "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES, "thing_classes"
    classes = getattr(metadata, names, None)
    if classes is not None and len(classes) != value:
        raise ConfigError(f"{key} is {value} but dataset {dataset_name} has {len(classes)} classes; "
                          f"set {key} {len(classes)} or use the config written for this dataset")


def missing_sem_seg_files(metadata):
    """(images without a label, labels without an image) under the split's two folders, by file
    stem; Detectron2's ``load_sem_seg`` keeps only the pairs it finds, with a warning."""
    image_root, label_root = getattr(metadata, "image_root", None), getattr(metadata, "sem_seg_root", None)
    if not (image_root and label_root and os.path.isdir(image_root) and os.path.isdir(label_root)):
        return [], []

    def stems(folder, extensions):
        return {os.path.splitext(f)[0]: os.path.join(folder, f)
                for f in os.listdir(folder) if f.lower().endswith(extensions)}

    images, labels = stems(image_root, IMAGE_EXTENSIONS), stems(label_root, (".png",))
    return ([images[s] for s in sorted(images.keys() - labels.keys())],
            [labels[s] for s in sorted(labels.keys() - images.keys())])


def check_complete_split(cfg, dataset_name):
    metadata = prepare_dataset(dataset_name)
    if not _is_lvis(metadata):
        no_label, no_image = missing_sem_seg_files(metadata)
        if (no_label or no_image) and not cfg.DATASETS.ALLOW_MISSING_FILES:
            lacking = [f"{p} has no label in {metadata.sem_seg_root}" for p in no_label[:2]]
            lacking += [f"{p} has no image in {metadata.image_root}" for p in no_image[:2]]
            raise DatasetError(
                f"dataset {dataset_name}: {len(no_label)} images without a label and {len(no_image)} "
                f"labels without an image ({'; '.join(lacking)}); restore the missing files, or set "
                "DATASETS.ALLOW_MISSING_FILES True to use only the complete pairs"
            )
    try:
        dicts = get_dataset_dicts_checked(dataset_name)
    except AssertionError as e:  # Detectron2's loaders assert on an empty folder
        raise DatasetError(f"dataset {dataset_name}: {one_line(e)}; put its files under "
                           f"DETECTRON2_DATASETS={os.getenv('DETECTRON2_DATASETS', 'datasets')} as "
                           "datasets/README.md describes") from None
    if not dicts:
        raise DatasetError(f"dataset {dataset_name} has no images; check its folder under "
                           f"DETECTRON2_DATASETS={os.getenv('DETECTRON2_DATASETS', 'datasets')}")
    if _is_lvis(metadata):
        absent = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
        if absent and not cfg.DATASETS.ALLOW_MISSING_FILES:
            raise DatasetError(
                f"dataset {dataset_name}: {len(absent)} of its {len(dicts)} images do not exist (e.g. "
                f"{absent[0]}); restore them, or set DATASETS.ALLOW_MISSING_FILES True to skip them"
            )
    return dicts


def _label_values_job(job):
    check_label_file(*job)


def check_sem_seg_labels(dicts, num_classes, ignore, num_workers):
    """Every label read as training reads it (``labels.read_label``) and its values in
    [0, num_classes) or ignore, in ``num_workers`` processes; the first bad file is one line."""
    jobs = [(d["sem_seg_file_name"], num_classes, ignore) for d in dicts if "sem_seg_file_name" in d]
    if num_workers > 1 and len(jobs) > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        # SIGTERM's default action in the workers: Pool.terminate() (run when the pool closes)
        # stops them with it, and a forked worker inherits the trainer's stop handler, which
        # leaves SIGTERM to the training process (engine/stops.py) and would hang the close.
        with multiprocessing.get_context(method).Pool(
                num_workers, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
            for _ in pool.imap_unordered(_label_values_job, jobs, chunksize=max(1, len(jobs) // (8 * num_workers))):
                pass
    else:
        for job in jobs:
            _label_values_job(job)


def check_loaded_images(dataset_name, dicts):
    """Refuse an image that has its label but that the dataset's loader left out: Detectron2's
    ``load_sem_seg`` reads one image extension (ADE20K's ``.jpg``) and drops the others with a
    warning, so a ``.png`` among them would silently not be trained on."""
    metadata = MetadataCatalog.get(dataset_name)
    image_root, label_root = getattr(metadata, "image_root", None), getattr(metadata, "sem_seg_root", None)
    if not (image_root and label_root and os.path.isdir(image_root) and os.path.isdir(label_root)):
        return
    loaded = {os.path.abspath(d["file_name"]) for d in dicts}
    labelled = {os.path.splitext(f)[0] for f in os.listdir(label_root) if f.endswith(".png")}
    left_out = sorted(os.path.join(image_root, f) for f in os.listdir(image_root)
                      if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.splitext(f)[0] in labelled
                      and os.path.abspath(os.path.join(image_root, f)) not in loaded)
    if left_out:
        extensions = sorted({os.path.splitext(d["file_name"])[1] for d in dicts}) or ["?"]
        ade20k = " (ADE20K images are .jpg)" if extensions == [".jpg"] else ""
        raise DatasetError(
            f"dataset {dataset_name}: {left_out[0]} is not read by its loader, which reads "
            f"{'/'.join(extensions)} images only ({len(left_out)} such file(s)); convert it to "
            f"{extensions[0]}{ade20k} or remove it and its label")


def check_data(cfg, eval_only=False):
    """Check the splits a run reads (training ones unless ``eval_only``, then the test ones)."""
    names = list(cfg.DATASETS.TEST) + ([] if eval_only else list(cfg.DATASETS.TRAIN))
    for name in names:
        check_num_classes(cfg, name)
        dicts = check_complete_split(cfg, name)
        metadata = MetadataCatalog.get(name)
        if _is_lvis(metadata):
            if name in cfg.DATASETS.TEST:
                check_lvis_frequencies(name)
            continue
        check_loaded_images(name, dicts)
        # Training labels counted in this process were checked then; the others (statistics
        # given or reused) are checked here, or a bad one would stop the run at its iteration.
        if name in cfg.DATASETS.TEST or name not in LABELS_CHECKED:
            check_sem_seg_labels(dicts, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                                 getattr(metadata, "ignore_label", 255), cfg.DATALOADER.CLASS_STATS_WORKERS)
    logger.info(f"data checked before the first iteration: {', '.join(names)}")
