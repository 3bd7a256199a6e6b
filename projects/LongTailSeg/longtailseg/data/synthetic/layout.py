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
# Class profiles (profiles.py): the folder under DETECTRON2_DATASETS each is registered from, and
# what a profile writes (the classes file last, as above).
PROFILE_FOLDERS = {
    "default": "synthetic",
    "ade20k": "synthetic_ade20k_profile",
    "lvis_v1": "synthetic_lvis_v1_profile",
}
PROFILE_OUTPUT_ENTRIES = {
    "default": OUTPUT_ENTRIES,
    "ade20k": (ADE_FOLDER, CLASSES_FILE),
    "lvis_v1": (LVIS_FOLDER, COCO_FOLDER, CLASSES_FILE),
}


def generate_command(root: str, profile: str = "default") -> str:
    command = GENERATE_COMMAND.format(root=root)
    return command if profile == "default" else f"{command} --profile {profile}"

CITYSCAPES_CITIES = {"train": "synthburg", "val": "synthstadt"}


def read_synthetic_classes(root: str, profile: str = "default") -> Dict:
    """The contents of ``ROOT/synthetic_classes.json``; a one-line DatasetError if absent."""
    path = os.path.join(root, CLASSES_FILE)
    command = generate_command(root, profile)
    if not os.path.isfile(path):
        raise DatasetError(
            f"{path} not found; generate the synthetic data with "
            f"`{command}`"
        )
    try:
        with open(path) as f:
            classes = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(
            f"{path} is unreadable ({e}); regenerate it with "
            f"`{command} --force`"
        ) from None
    if not isinstance(classes, dict) or classes.get("format") != FORMAT:
        raise DatasetError(
            f"{path} is not a {FORMAT} file; regenerate it with "
            f"`{command} --force`"
        )
    return classes
