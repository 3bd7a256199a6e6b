"""Where the synthetic data lives and what marks it complete: the folder layout, the classes file
and its reader. Registration imports only this module of the package (no generator code)."""
import json
import os
from typing import Dict

from ...errors import DatasetError


FORMAT = "longtailseg-synthetic/1"
CLASSES_FILE = "synthetic_classes.json"
ADE_FOLDER = "ADEChallengeData2016"
CITYSCAPES_FOLDER = "cityscapes"
LVIS_FOLDER = "lvis"
COCO_FOLDER = "coco"
# The classes file goes last: its presence marks a complete data set.
OUTPUT_ENTRIES = (ADE_FOLDER, CITYSCAPES_FOLDER, LVIS_FOLDER, COCO_FOLDER, CLASSES_FILE)
STAGING_PREFIX = ".tmp-synthetic-"
GENERATE_COMMAND = "python tools/make_synthetic_data.py --root {root}"

CITYSCAPES_CITIES = {"train": "synthburg", "val": "synthstadt"}


def read_synthetic_classes(root: str) -> Dict:
    """The contents of ``ROOT/synthetic_classes.json``; a one-line DatasetError if absent."""
    path = os.path.join(root, CLASSES_FILE)
    if not os.path.isfile(path):
        raise DatasetError(
            f"{path} not found; generate the synthetic data with "
            f"`{GENERATE_COMMAND.format(root=root)}`"
        )
    try:
        with open(path) as f:
            classes = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(
            f"{path} is unreadable ({e}); regenerate it with "
            f"`{GENERATE_COMMAND.format(root=root)} --force`"
        ) from None
    if not isinstance(classes, dict) or classes.get("format") != FORMAT:
        raise DatasetError(
            f"{path} is not a {FORMAT} file; regenerate it with "
            f"`{GENERATE_COMMAND.format(root=root)} --force`"
        )
    return classes
