"""NYU Depth V2's 1449 densely labelled frames (Silberman et al., ECCV 2012) in the 13-class
mapping plus "unknown" (PAT's 14 categories) and in the 40-class mapping, registered from
``$DETECTRON2_DATASETS/nyuv2`` (and the synthetic copy from ``$DETECTRON2_DATASETS/synthetic/nyuv2``)
on import, reading no file; and the reader of the published ``nyu_depth_v2_labeled.mat``.

The published file is a MATLAB v7.3 MAT-file, that is HDF5, read with h5py. MATLAB stores arrays
column-major, so h5py sees every array with its axes reversed: ``images`` is (N, 3, W, H) uint8,
``labels`` (N, W, H) uint16 with 0 = unlabelled and 1..894 the raw classes, ``names`` (1, 894)
references to the class names (uint16 characters). :class:`LabeledMat` transposes back to
H x W (x 3).

Class mappings (public tables):

* 894 raw classes -> 40 classes: Gupta, Arbelaez and Malik, "Perceptual Organization and
  Recognition of Indoor Scenes from RGB-D Images", CVPR 2013; distributed as ``mapClass`` in
  ``classMapping40.mat`` (https://github.com/ankurhanda/nyuv2-meta-data); shipped as
  :data:`~.nyuv2_mapping40.NYU894_TO_40` (894 numbers), so the prepare script needs only the
  ``.mat``; a downloaded ``classMapping40.mat`` (or its numbers as text) takes precedence.
* 40 classes -> 13 classes: Couprie et al., ICLR 2013 / Eigen and Fergus, ICCV 2015; the
  ``classMapping13`` table of ``class13Mapping.mat`` in the same repository, 40 numbers, below as
  :data:`NYU40_TO_13` (index 0, unlabelled, -> 0, "unknown").

Label ids written by ``datasets/prepare_nyuv2.py``:

* ``labels13/``: 0 unknown (unlabelled pixels, PAT counts them as a category), 1..13 the 13
  classes in the table's order; nothing is ignored (PAT's 14 categories).
* ``labels40/``: 0..39 the 40 classes, 255 (ignored) for unlabelled pixels, as Gupta's benchmark
  scores them.

Registered: ``nyuv2_{13,40}_labeled`` (all 1449 frames), ``nyuv2_{13,40}_pat_{train,val,test}``
(PAT's seeded 0.8 / 0.1 / 0.1 split, one file ``nyuv2/pat_split_seed0.json`` shared by both
mappings) and the same names with the prefix ``synthetic_``.
"""
import functools
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ...errors import DatasetError
from ..pat_protocol import register_pat_protocol, split_file_path

NYU40_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
]
NYU13_CLASSES = ["unknown", "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
                 "picture", "sofa", "table", "tv", "wall", "window"]
# classMapping13 of ankurhanda/nyuv2-meta-data's class13Mapping.mat: NYU40 id (1..40) -> 13-class
# id (1..13); index 0 (unlabelled) -> 0 (unknown). E.g. wall -> wall, door -> wall, blinds -> window.
NYU40_TO_13 = np.array([0, 12, 5, 6, 1, 4, 9, 10, 12, 13, 6, 8, 6, 13, 10, 6, 13, 6, 7, 7, 5, 7, 3,
                        2, 6, 11, 7, 7, 7, 7, 7, 7, 6, 7, 7, 7, 7, 7, 7, 6, 7], np.uint8)
IGNORE_LABEL = 255
MAPPINGS = {"13": NYU13_CLASSES, "40": NYU40_CLASSES}
MAT_FILE = "nyu_depth_v2_labeled.mat"
PREPARE_COMMAND = "python datasets/prepare_nyuv2.py --root {root}"


def builtin_mapping40(num_raw_classes: int, mat_path: str) -> np.ndarray:
    """The shipped raw -> 40-class table (Gupta et al.'s ``mapClass``) as a lookup of 895 entries
    (0 -> 0), for the published ``.mat`` of 894 raw classes; any other file needs its own table."""
    from .nyuv2_mapping40 import NUM_RAW_CLASSES, NYU894_TO_40

    if num_raw_classes != NUM_RAW_CLASSES:
        raise DatasetError(f"{mat_path} has {num_raw_classes} raw classes, not NYU Depth V2's {NUM_RAW_CLASSES}: "
                           "the built-in 894 -> 40 table does not apply; give its own with --mapping40")
    return np.array((0, *NYU894_TO_40), np.uint8)


def read_mapping40(path: str, num_raw_classes: int) -> np.ndarray:
    """The raw -> 40-class table as a lookup of ``num_raw_classes + 1`` entries (0 -> 0): from
    ``classMapping40.mat`` (its ``mapClass``; MATLAB v5, read with scipy when installed) or a text
    file of the same numbers (whitespace- or comma-separated, one per raw class in order)."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path} does not exist; download classMapping40.mat from "
                           "https://github.com/ankurhanda/nyuv2-meta-data (datasets/README.md)")
    if path.endswith(".mat"):
        try:
            from scipy.io import loadmat
        except ImportError:
            raise DatasetError(
                f"reading {path} needs scipy (pip install scipy), or give the 894 numbers of its "
                "mapClass as a text file (datasets/README.md shows the one-line conversion)") from None
        try:
            values = np.asarray(loadmat(path)["mapClass"]).ravel()
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{path} is not classMapping40.mat with a 'mapClass' table "
                               f"({type(e).__name__}); download it again (datasets/README.md)") from None
    else:
        try:
            with open(path, encoding="utf-8") as f:
                values = np.array([int(v) for v in f.read().replace(",", " ").split()])
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DatasetError(f"{path} is not a list of integers, one 40-class id per raw class "
                               f"({type(e).__name__}: {str(e)[:60]}); datasets/README.md shows how to "
                               "write it from classMapping40.mat") from None
    if values.size != num_raw_classes:
        raise DatasetError(f"{path} maps {values.size} raw classes but the .mat file has "
                           f"{num_raw_classes}; use the classMapping40 of NYU Depth V2's labelled set")
    if values.size and (values.min() < 0 or values.max() > len(NYU40_CLASSES)):
        raise DatasetError(f"{path} holds the class id {int(values.max() if values.max() > 40 else values.min())}, "
                           f"outside 0..{len(NYU40_CLASSES)}; use classMapping40's mapClass")
    return np.concatenate([[0], values]).astype(np.uint8)


def labels40(raw: np.ndarray, lookup40: np.ndarray) -> np.ndarray:
    """40-class ids 0..39 of raw labels, 255 where unlabelled (raw 0, or mapped to 0)."""
    mapped = lookup40[raw]
    return np.where(mapped == 0, IGNORE_LABEL, mapped - 1).astype(np.uint8)


def labels13(raw: np.ndarray, lookup40: np.ndarray) -> np.ndarray:
    """14-category ids of raw labels: 0 unknown, 1..13 the 13 classes (through the 40 classes)."""
    return NYU40_TO_13[lookup40[raw]]


class LabeledMat:
    """``nyu_depth_v2_labeled.mat`` opened with h5py (a context manager): ``len``, ``names``,
    ``image(i)`` (H x W x 3 uint8) and ``label(i)`` (H x W raw class ids); a file that is not the
    published one is a one-line DatasetError naming it."""

    def __init__(self, path: str):
        import h5py

        self.path = path
        if not os.path.isfile(path):
            raise DatasetError(f"{path} does not exist; download {MAT_FILE} (2.8 GB, datasets/README.md) there")
        try:
            self.file = h5py.File(path, "r")
        except OSError:
            raise DatasetError(f"{path} is not an HDF5 (MATLAB v7.3) file; download {MAT_FILE} "
                               "again (an interrupted download is truncated)") from None
        for key, ndim in (("images", 4), ("labels", 3), ("names", 2)):
            if key not in self.file or self.file[key].ndim != ndim:
                self.file.close()
                raise DatasetError(f"{path} has no {ndim}-d '{key}' array; it is not {MAT_FILE} "
                                   "(download it again)")
        self.images, self.labels = self.file["images"], self.file["labels"]
        if self.images.shape[1] != 3 or self.images.shape[0] != self.labels.shape[0] \
                or self.images.shape[2:] != self.labels.shape[1:]:
            shapes = f"images {self.images.shape}, labels {self.labels.shape}"
            self.file.close()
            raise DatasetError(f"{path}: {shapes} do not match as in {MAT_FILE} "
                               "(N x 3 x W x H and N x W x H); download it again")

    @property
    def names(self):
        return ["".join(map(chr, np.asarray(self.file[ref]).ravel())) for ref in self.file["names"][0]]

    def __len__(self):
        return self.images.shape[0]

    def image(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self.images[index].transpose(2, 1, 0))

    def label(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self.labels[index].T)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def frame_name(index: int) -> str:
    """File stem of frame ``index`` (0-based, the .mat's order)."""
    return f"{index:04d}"


def load_nyuv2(folder: str, mapping: str):
    """Records of the prepared frames: ``images/<frame>.png`` and ``labels<mapping>/<frame>.png``."""
    images, labels = os.path.join(folder, "images"), os.path.join(folder, f"labels{mapping}")
    root = os.path.dirname(folder)
    for path in (images, labels):
        if not os.path.isdir(path):
            raise DatasetError(f"{path} does not exist; write it from {MAT_FILE} with "
                               f"`{PREPARE_COMMAND.format(root=root)}`")
    records = []
    for file in sorted(os.listdir(images)):
        stem, ext = os.path.splitext(file)
        if ext != ".png":
            continue
        label = os.path.join(labels, stem + ".png")
        if not os.path.isfile(label):
            raise DatasetError(f"{label} does not exist but {os.path.join(images, file)} does; run "
                               f"`{PREPARE_COMMAND.format(root=root)}` again")
        records.append({"file_name": os.path.join(images, file), "sem_seg_file_name": label})
    if not records:
        raise DatasetError(f"{images} holds no .png frame; run `{PREPARE_COMMAND.format(root=root)}`")
    return records


def register_nyuv2(folder: str, prefix: str = "nyuv2"):
    """Register ``<prefix>_{13,40}_labeled`` and ``<prefix>_{13,40}_pat_{train,val,test}`` from
    ``folder`` (the one ``datasets/prepare_nyuv2.py`` writes into); reads no file."""
    folder = os.path.abspath(folder)
    names = []
    for mapping, classes in MAPPINGS.items():
        name = f"{prefix}_{mapping}_labeled"
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                catalog.remove(name)
        DatasetCatalog.register(name, functools.partial(load_nyuv2, folder, mapping))
        metadata = dict(stuff_classes=list(classes), ignore_label=IGNORE_LABEL, evaluator_type="sem_seg",
                        dataset_folder=folder)
        MetadataCatalog.get(name).set(**metadata)
        names.append(name)
        names += register_pat_protocol([name], f"{prefix}_{mapping}", split_file_path(folder), **metadata)
    return names


_ROOT = os.getenv("DETECTRON2_DATASETS", "datasets")
register_nyuv2(os.path.join(_ROOT, "nyuv2"))
register_nyuv2(os.path.join(_ROOT, "synthetic", "nyuv2"), prefix="synthetic_nyuv2")
