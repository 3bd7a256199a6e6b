"""Oxford-IIIT Pet (Parkhi et al., CVPR 2012) as PAT segments it: three classes from the trimaps,
registered from ``$DETECTRON2_DATASETS/oxford_pet`` (and the synthetic copy from
``$DETECTRON2_DATASETS/synthetic/oxford_pet``) on import, reading no file.

The published layout (images.tar.gz and annotations.tar.gz unpacked side by side)::

    oxford_pet/images/<Breed>_<n>.jpg                 about 7400 images (7349 listed in the splits)
    oxford_pet/annotations/trimaps/<Breed>_<n>.png    1 = pet, 2 = background, 3 = not classified
    oxford_pet/annotations/{trainval,test}.txt        "<image> <class id> <species> <breed id>"
    oxford_pet/annotations/trimaps_detectron2/*.png   written by datasets/prepare_oxford_pet.py

The dataset's README defines the trimap values as "1: Foreground 2: Background 3: Not
classified"; the "not classified" band is the pet's outline, which PAT counts as a class of its own
("background, boundary, and main body of the animals"). Contiguous ids follow PAT's order:
0 background, 1 boundary, 2 body; any other trimap value is refused by the prepare script. The
trimaps are not rewritten: Detectron2's mapper reads label values as stored, so the prepared
copy in ``trimaps_detectron2/`` holds the ids (as ADE20K's ``annotations_detectron2/``).

Registered: ``oxford_pet_trainval`` / ``oxford_pet_test`` (the published split, 3680 / 3669),
``oxford_pet_pat_{train,val,test}`` (PAT's seeded 0.8 / 0.1 / 0.1 split of all 7349 listed
images, kept in ``oxford_pet/pat_split_seed0.json``) and ``synthetic_oxford_pet_pat_*``.
"""
import functools
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ...errors import DatasetError
from ..pat_protocol import register_pat_protocol, split_file_path

OXFORD_PET_CLASSES = ["background", "boundary", "body"]
OXFORD_PET_COLORS = [(0, 0, 0), (255, 255, 0), (200, 40, 40)]
# Trimap value -> class id (the dataset README: 1 foreground, 2 background, 3 not classified).
TRIMAP_TO_CLASS = {1: 2, 2: 0, 3: 1}
IGNORE_LABEL = 255
LIST_FILES = {"trainval": "trainval.txt", "test": "test.txt"}
TRIMAP_FOLDER = os.path.join("annotations", "trimaps")
LABEL_FOLDER = os.path.join("annotations", "trimaps_detectron2")
PREPARE_COMMAND = "python datasets/prepare_oxford_pet.py --root {root}"


def trimap_to_label(trimap: np.ndarray, path: str = "trimap") -> np.ndarray:
    """Class ids (uint8) of a trimap; a value other than 1, 2, 3 is a one-line DatasetError."""
    lookup = np.full(256, IGNORE_LABEL, np.uint8)
    for value, class_id in TRIMAP_TO_CLASS.items():
        lookup[value] = class_id
    if trimap.dtype != np.uint8 or trimap.ndim != 2:
        raise DatasetError(f"{path} is not a single-channel 8-bit trimap (shape {trimap.shape}, "
                           f"{trimap.dtype}); use the trimaps of annotations.tar.gz")
    bad = np.setdiff1d(np.unique(trimap), list(TRIMAP_TO_CLASS))
    if bad.size:
        raise DatasetError(f"{path} holds the value {int(bad[0])}; Oxford-IIIT Pet trimaps hold only "
                           "1 (pet), 2 (background) and 3 (boundary): use the trimaps of annotations.tar.gz")
    return lookup[trimap]


def read_list_file(path: str):
    """Image names of a split list (``trainval.txt`` / ``test.txt`` / ``list.txt``); '#' lines are
    comments."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist; unpack annotations.tar.gz into "
                           f"{os.path.dirname(os.path.dirname(path))} (datasets/README.md)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} cannot be read as a split list ({type(e).__name__}); "
                           "unpack annotations.tar.gz again") from None
    names = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 4 or not all(f.isdigit() for f in fields[1:]):
            raise DatasetError(f"{path} line {number} is {line[:60]!r}, not '<image> <class id> <species> "
                               "<breed id>'; unpack annotations.tar.gz again")
        names.append(fields[0])
    return names


def load_oxford_pet(folder: str, list_names=("trainval", "test")):
    """Records of the images the list files name: ``images/<name>.jpg`` and its prepared label
    ``annotations/trimaps_detectron2/<name>.png``; a missing file is one line naming it."""
    labels = os.path.join(folder, LABEL_FOLDER)
    if not os.path.isdir(labels):
        raise DatasetError(f"{labels} does not exist; write the labels from the trimaps with "
                           f"`{PREPARE_COMMAND.format(root=os.path.dirname(folder))}`")
    records = []
    for list_name in list_names:
        for name in read_list_file(os.path.join(folder, "annotations", LIST_FILES[list_name])):
            image = os.path.join(folder, "images", name + ".jpg")
            label = os.path.join(labels, name + ".png")
            for path, fix in ((image, "unpack images.tar.gz there"),
                              (label, f"run `{PREPARE_COMMAND.format(root=os.path.dirname(folder))}`")):
                if not os.path.isfile(path):
                    raise DatasetError(f"{path} does not exist but {LIST_FILES[list_name]} lists it; {fix}")
            records.append({"file_name": image, "sem_seg_file_name": label})
    return records


def _metadata(folder):
    return dict(stuff_classes=list(OXFORD_PET_CLASSES), stuff_colors=list(OXFORD_PET_COLORS),
                ignore_label=IGNORE_LABEL, evaluator_type="sem_seg", dataset_folder=folder)


def register_oxford_pet(folder: str, prefix: str = "oxford_pet"):
    """Register ``<prefix>_trainval`` / ``<prefix>_test`` (the published split) and
    ``<prefix>_pat_{train,val,test}`` from ``folder`` (the one holding ``images/`` and
    ``annotations/``); reads no file. Returns the names."""
    folder = os.path.abspath(folder)
    sources = []
    for list_name in LIST_FILES:
        name = f"{prefix}_{list_name}"
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                catalog.remove(name)
        DatasetCatalog.register(name, functools.partial(load_oxford_pet, folder, (list_name,)))
        MetadataCatalog.get(name).set(**_metadata(folder))
        sources.append(name)
    pat = register_pat_protocol(sources, prefix, split_file_path(folder), **_metadata(folder))
    return sources + pat


def _datasets_root():
    return os.getenv("DETECTRON2_DATASETS", "datasets")


register_oxford_pet(os.path.join(_datasets_root(), "oxford_pet"))
register_oxford_pet(os.path.join(_datasets_root(), "synthetic", "oxford_pet"), prefix="synthetic_oxford_pet")
