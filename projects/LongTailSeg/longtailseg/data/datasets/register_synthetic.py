"""The built-in synthetic long-tailed sets, registered from ``$DETECTRON2_DATASETS`` on import.

The sets live under ``$DETECTRON2_DATASETS/synthetic`` in the real on-disk formats
(ADEChallengeData2016, Cityscapes gtFine, LVIS v1 json + COCO image folders), written by
``tools/make_synthetic_data.py``, and are read with Detectron2's own loaders; the sets with the
real data sets' class profiles (``--profile ade20k`` / ``lvis_v1``) live beside it in
``synthetic_ade20k_profile/`` and ``synthetic_lvis_v1_profile/``. The real ADE20K, Cityscapes and
LVIS sets are Detectron2's builtin registrations (``ade20k_sem_seg_train``,
``cityscapes_fine_sem_seg_train``, ``lvis_v1_train``...); nothing is re-registered for them.

Registering reads no file: the class names and colours of ``synthetic_classes.json`` are read on
first access (:class:`~.metadata.FileMetadata`), so an absent or stale folder costs nothing
until a run uses it, and then one line naming the file and the fix.
"""
import functools
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.cityscapes import load_cityscapes_semantic
from detectron2.data.datasets.lvis import load_lvis_json

from ...errors import DatasetError
from ..synthetic.layout import PROFILE_FOLDERS, generate_command, read_synthetic_classes
from .metadata import FileMetadata

# The synthetic sets: name -> (class profile, on-disk layout, split).
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


class SyntheticMetadata(FileMetadata):
    """Metadata of a synthetic sem-seg set: ``stuff_classes`` / ``stuff_colors`` come from
    ``<synthetic_root>/synthetic_classes.json`` when first read."""

    FILE_KEYS = ("stuff_classes", "stuff_colors")

    def read_file_keys(self):
        classes = read_synthetic_classes(self.synthetic_root, self.synthetic_profile, self.FILE_KEYS,
                                         from_env=self.registered_from_env)
        names, colors = self.FILE_KEYS
        return {names: list(classes[names]), colors: [tuple(c) for c in classes[colors]]}


class SyntheticLVISMetadata(SyntheticMetadata):
    """Metadata of a synthetic LVIS-layout set: ``thing_classes`` / ``thing_colors`` from the file."""

    FILE_KEYS = ("thing_classes", "thing_colors")


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
    """Dataset function: the classes file and the folders first (one-line errors), then
    Detectron2's loader."""
    profile, layout, split = SYNTHETIC_SPLITS[name]
    images, labels = _synthetic_paths(root, layout, split)
    metadata = MetadataCatalog.get(name)
    if isinstance(metadata, FileMetadata):  # unless replaced since registration
        metadata.load()
    _require_path(labels, root, profile)
    if layout == "lvis":
        return load_lvis_json(labels, images, dataset_name=None)
    _require_path(images, root, profile)
    if layout == "ade_sem_seg":
        return load_sem_seg(labels, images, gt_ext="png", image_ext="jpg")
    return load_cityscapes_semantic(images, labels)


def register_synthetic_datasets(root=None, profile="default"):
    """(Re-)register the synthetic sets of a class profile (``default``, ``ade20k``, ``lvis_v1``)
    from ``root`` (default ``$DETECTRON2_DATASETS/synthetic``, ``.../synthetic_ade20k_profile``,
    ``.../synthetic_lvis_v1_profile``) with their metadata; reads no file. Returns the root.

    Calling it again with another root replaces the earlier registration.
    """
    from_env = root is None
    root = os.path.abspath(root or _default_root(profile))
    for name, (set_profile, layout, split) in SYNTHETIC_SPLITS.items():
        if set_profile != profile:
            continue
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, functools.partial(_load_synthetic, name, root))
        images, labels = _synthetic_paths(root, layout, split)
        location = ({"json_file": labels} if layout == "lvis"
                    else {"sem_seg_root": labels, "ignore_label": 255})
        metadata_class = SyntheticLVISMetadata if layout == "lvis" else SyntheticMetadata
        MetadataCatalog[name] = metadata_class(
            name=name, synthetic_root=root, synthetic_profile=profile, registered_from_env=from_env,
            image_root=images, evaluator_type=_EVALUATOR_TYPES[layout], **location)
    return root


def register_all_synthetic():
    for profile in PROFILE_FOLDERS:
        register_synthetic_datasets(profile=profile)


register_all_synthetic()
