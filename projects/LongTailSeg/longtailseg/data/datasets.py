"""Dataset registration: the built-in synthetic long-tailed sets, and a loading guard for all sets.

The synthetic sets live under ``$DETECTRON2_DATASETS/synthetic`` in the real on-disk formats
(ADEChallengeData2016, Cityscapes gtFine, LVIS v1 json + COCO image folders), written by
``tools/make_synthetic_data.py``, and are read with Detectron2's own loaders. The real ADE20K,
Cityscapes and LVIS sets are Detectron2's builtin registrations (``ade20k_sem_seg_train``,
``cityscapes_fine_sem_seg_train``, ``lvis_v1_train``...); nothing is re-registered for them.
"""
import contextlib
import functools
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.cityscapes import load_cityscapes_semantic
from detectron2.data.datasets.lvis import load_lvis_json

from ..errors import DatasetError
from .synthetic import read_synthetic_classes

SPLITS = {"train": ("training", "train", "train2017"), "val": ("validation", "val", "val2017")}
SYNTHETIC_FOLDER = "synthetic"


def _default_root():
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), SYNTHETIC_FOLDER)


def _require_path(path, root):
    if not os.path.exists(path):
        raise DatasetError(
            f"dataset path {path} does not exist; generate the synthetic data with "
            f"`python tools/make_synthetic_data.py --root {root}` (or set DETECTRON2_DATASETS)"
        )


def _synthetic_paths(root, split):
    ade_split, cityscapes_split, coco_split = SPLITS[split]
    ade = os.path.join(root, "ADEChallengeData2016")
    return {
        "ade_images": os.path.join(ade, "images", ade_split),
        "ade_labels": os.path.join(ade, "annotations_detectron2", ade_split),
        "cityscapes_images": os.path.join(root, "cityscapes", "leftImg8bit", cityscapes_split),
        "cityscapes_labels": os.path.join(root, "cityscapes", "gtFine", cityscapes_split),
        "lvis_json": os.path.join(root, "lvis", f"lvis_v1_{split}.json"),
        "lvis_images": os.path.join(root, "coco") + os.sep,
    }


def _load_synthetic(kind, name, root, split):
    """Dataset function: check the files first (one-line error), then Detectron2's loader."""
    paths = _synthetic_paths(root, split)
    set_synthetic_metadata(name, root)
    if kind == "ade":
        _require_path(paths["ade_images"], root)
        _require_path(paths["ade_labels"], root)
        return load_sem_seg(paths["ade_labels"], paths["ade_images"], gt_ext="png", image_ext="jpg")
    if kind == "cityscapes":
        _require_path(paths["cityscapes_images"], root)
        _require_path(paths["cityscapes_labels"], root)
        return load_cityscapes_semantic(paths["cityscapes_images"], paths["cityscapes_labels"])
    _require_path(paths["lvis_json"], root)
    return load_lvis_json(paths["lvis_json"], paths["lvis_images"], dataset_name=None)


def _synthetic_kind(name):
    return name.split("_")[1]  # synthetic_{ade,cityscapes,lvis}_...


def set_synthetic_metadata(name, root):
    """Class names and paths from ``synthetic_classes.json``, set once the data exists."""
    metadata = MetadataCatalog.get(name)
    if hasattr(metadata, "evaluator_type"):
        return metadata
    classes = read_synthetic_classes(root)  # DatasetError naming the file and the fix
    split = name.rsplit("_", 1)[1]
    paths = _synthetic_paths(root, split)
    kind = _synthetic_kind(name)
    if kind in ("ade", "cityscapes"):
        image_root = paths[f"{kind}_images"]
        gt_root = paths[f"{kind}_labels"]
        metadata.set(
            stuff_classes=list(classes["stuff_classes"]),
            stuff_colors=[tuple(c) for c in classes["stuff_colors"]],
            image_root=image_root,
            sem_seg_root=gt_root,
            ignore_label=255,
            evaluator_type="sem_seg",
        )
    else:
        metadata.set(
            thing_classes=list(classes["thing_classes"]),
            thing_colors=[tuple(c) for c in classes["thing_colors"]],
            json_file=paths["lvis_json"],
            image_root=paths["lvis_images"],
            evaluator_type="lvis",
        )
    return metadata


SYNTHETIC_DATASETS = [
    f"synthetic_{kind}_{split}"
    for kind in ("ade_sem_seg", "cityscapes_sem_seg", "lvis")
    for split in ("train", "val")
]


def register_synthetic_datasets(root=None):
    """(Re-)register the synthetic sets from ``root`` (default ``$DETECTRON2_DATASETS/synthetic``).

    Calling it again with another root replaces the earlier registration.
    """
    root = os.path.abspath(root or _default_root())
    for name in SYNTHETIC_DATASETS:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        split = name.rsplit("_", 1)[1]
        DatasetCatalog.register(
            name, functools.partial(_load_synthetic, _synthetic_kind(name), name, root, split)
        )
        MetadataCatalog.get(name).set(synthetic_root=root)
        if os.path.isfile(os.path.join(root, "synthetic_classes.json")):
            set_synthetic_metadata(name, root)
    return root


def prepare_dataset(name):
    """Make sure ``name`` is registered and its metadata complete, else a one-line error."""
    if name not in DatasetCatalog.list():
        raise DatasetError(
            f"dataset {name!r} is not registered; use one of Detectron2's builtin names "
            f"(e.g. ade20k_sem_seg_train, lvis_v1_train) or {', '.join(SYNTHETIC_DATASETS)}"
        )
    metadata = MetadataCatalog.get(name)
    if name in SYNTHETIC_DATASETS:
        set_synthetic_metadata(name, metadata.synthetic_root)
    return metadata


@contextlib.contextmanager
def missing_files_reported(names):
    """Turn a loader's FileNotFoundError into a one-line DatasetError naming the path."""
    try:
        yield
    except FileNotFoundError as e:
        path = e.filename or str(e)
        raise DatasetError(
            f"dataset {', '.join(names)}: {path} does not exist; put the data under "
            f"DETECTRON2_DATASETS={os.getenv('DETECTRON2_DATASETS', 'datasets')} as "
            "datasets/README.md describes, or set DETECTRON2_DATASETS"
        ) from None


def get_dataset_dicts_checked(name):
    """``DatasetCatalog.get`` with missing files of any registered set reported in one line."""
    prepare_dataset(name)
    with missing_files_reported([name]):
        return DatasetCatalog.get(name)
