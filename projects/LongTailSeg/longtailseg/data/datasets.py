"""Dataset registration: the built-in synthetic long-tailed sets, and a loading guard for all sets.

The synthetic sets live under ``$DETECTRON2_DATASETS/synthetic`` in the real on-disk formats
(ADEChallengeData2016, Cityscapes gtFine, LVIS v1 json + COCO image folders), written by
``tools/make_synthetic_data.py``, and are read with Detectron2's own loaders; the sets with the
real data sets' class profiles (``--profile ade20k`` / ``lvis_v1``) live beside it in
``synthetic_ade20k_profile/`` and ``synthetic_lvis_v1_profile/``. The real ADE20K,
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
from .synthetic.layout import PROFILE_FOLDERS, generate_command, read_synthetic_classes

SYNTHETIC_FOLDER = PROFILE_FOLDERS["default"]
# The synthetic sets: name -> (class profile, on-disk layout, split). Each layout's evaluator_type
# is set when the set is registered; the class names when synthetic_classes.json exists.
SYNTHETIC_SPLITS = {
    **{f"synthetic_{layout}_{split}": ("default", layout, split)
       for layout in ("ade_sem_seg", "cityscapes_sem_seg", "lvis") for split in ("train", "val")},
    **{f"synthetic_ade20k_profile_sem_seg_{split}": ("ade20k", "ade_sem_seg", split)
       for split in ("train", "val")},
    **{f"synthetic_lvis_v1_profile_{split}": ("lvis_v1", "lvis", split) for split in ("train", "val")},
}
SYNTHETIC_DATASETS = list(SYNTHETIC_SPLITS)
_EVALUATOR_TYPES = {"ade_sem_seg": "sem_seg", "cityscapes_sem_seg": "sem_seg", "lvis": "lvis"}
# Folder names of each split in the three layouts (ADEChallengeData2016, Cityscapes, COCO images).
_SPLIT_FOLDERS = {"train": ("training", "train", "train2017"), "val": ("validation", "val", "val2017")}


def _default_root(profile="default"):
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), PROFILE_FOLDERS[profile])


def _require_path(path, root, profile):
    if not os.path.exists(path):
        raise DatasetError(
            f"dataset path {path} does not exist; generate the synthetic data with "
            f"`{generate_command(root, profile)}` (or set DETECTRON2_DATASETS)"
        )


def _synthetic_paths(root, layout, split):
    """(image folder, label folder or LVIS json) of one synthetic set."""
    ade_split, cityscapes_split, coco_split = _SPLIT_FOLDERS[split]
    if layout == "ade_sem_seg":
        ade = os.path.join(root, "ADEChallengeData2016")
        return (os.path.join(ade, "images", ade_split),
                os.path.join(ade, "annotations_detectron2", ade_split))
    if layout == "cityscapes_sem_seg":
        return (os.path.join(root, "cityscapes", "leftImg8bit", cityscapes_split),
                os.path.join(root, "cityscapes", "gtFine", cityscapes_split))
    # load_lvis_json joins image_root and the path relative to coco/ in each image's coco_url.
    return os.path.join(root, "coco") + os.sep, os.path.join(root, "lvis", f"lvis_v1_{split}.json")


def _load_synthetic(name, root):
    """Dataset function: check the files first (one-line error), then Detectron2's loader."""
    profile, layout, split = SYNTHETIC_SPLITS[name]
    images, labels = _synthetic_paths(root, layout, split)
    _set_synthetic_class_names(name, root)
    _require_path(labels, root, profile)
    if layout == "lvis":
        return load_lvis_json(labels, images, dataset_name=None)
    _require_path(images, root, profile)
    if layout == "ade_sem_seg":
        return load_sem_seg(labels, images, gt_ext="png", image_ext="jpg")
    return load_cityscapes_semantic(images, labels)


def _set_synthetic_class_names(name, root):
    """Class names and colours from ``synthetic_classes.json``, once the data exists."""
    metadata = MetadataCatalog.get(name)
    profile, layout, _ = SYNTHETIC_SPLITS[name]
    kind = "thing" if layout == "lvis" else "stuff"
    if not hasattr(metadata, f"{kind}_classes"):
        classes = read_synthetic_classes(root, profile)  # DatasetError naming the file and the fix
        metadata.set(**{f"{kind}_classes": list(classes[f"{kind}_classes"]),
                        f"{kind}_colors": [tuple(c) for c in classes[f"{kind}_colors"]]})
    return metadata


def register_synthetic_datasets(root=None, profile="default"):
    """(Re-)register the synthetic sets of a class profile (``default``, ``ade20k``, ``lvis_v1``)
    from ``root`` (default ``$DETECTRON2_DATASETS/synthetic``, ``.../synthetic_ade20k_profile``,
    ``.../synthetic_lvis_v1_profile``) with their metadata; class names are added when
    ``synthetic_classes.json`` exists.

    Calling it again with another root replaces the earlier registration.
    """
    root = os.path.abspath(root or _default_root(profile))
    for name, (set_profile, layout, split) in SYNTHETIC_SPLITS.items():
        if set_profile != profile:
            continue
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, functools.partial(_load_synthetic, name, root))
        images, labels = _synthetic_paths(root, layout, split)
        location = ({"json_file": labels} if layout == "lvis"
                    else {"sem_seg_root": labels, "ignore_label": 255})
        MetadataCatalog.get(name).set(synthetic_root=root, image_root=images,
                                      evaluator_type=_EVALUATOR_TYPES[layout], **location)
        if os.path.isfile(os.path.join(root, "synthetic_classes.json")):
            _set_synthetic_class_names(name, root)
    return root


def prepare_dataset(name):
    """Make sure ``name`` is registered and its metadata complete, else a one-line error."""
    if name not in DatasetCatalog.list():
        raise DatasetError(
            f"dataset {name!r} is not registered; use one of Detectron2's builtin names "
            f"(e.g. ade20k_sem_seg_train, lvis_v1_train) or {', '.join(SYNTHETIC_DATASETS)}"
        )
    metadata = MetadataCatalog.get(name)
    if name in SYNTHETIC_SPLITS:
        _set_synthetic_class_names(name, metadata.synthetic_root)
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
