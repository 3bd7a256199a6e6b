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


def profile_of_folder(root: str):
    """The profile whose sets are registered from a folder of this name under
    DETECTRON2_DATASETS (``synthetic`` -> default), None for any other name."""
    name = os.path.basename(os.path.normpath(root))
    return next((profile for profile, folder in PROFILE_FOLDERS.items() if folder == name), None)


def check_profile_folder(root: str, profile: str) -> None:
    """Refuse to write ``profile`` into the folder another profile is registered from: the
    registration would read the other profile's classes from it."""
    owner = profile_of_folder(root)
    if owner is not None and owner != profile:
        parent = os.path.dirname(os.path.normpath(root)) or "."
        raise DatasetError(
            f"--root {root} is where the {owner} profile's sets are read from "
            f"(DETECTRON2_DATASETS/{PROFILE_FOLDERS[owner]}); write the {profile} profile to "
            f"`--root {os.path.join(parent, PROFILE_FOLDERS[profile])}` instead"
        )


def read_synthetic_classes(root: str, profile: str = "default", keys=(), from_env: bool = False) -> Dict:
    """The contents of ``ROOT/synthetic_classes.json``, checked to be ``profile``'s and to hold
    ``keys``; else a one-line DatasetError naming the file and the fix. ``from_env``: ROOT came
    from DETECTRON2_DATASETS, so pointing that elsewhere is a fix too."""
    path = os.path.join(root, CLASSES_FILE)
    command = generate_command(root, profile)
    elsewhere = (f", or point DETECTRON2_DATASETS at the folder that holds {PROFILE_FOLDERS[profile]}/"
                 if from_env else "")
    if not os.path.isfile(path):
        raise DatasetError(
            f"{path} not found; generate the synthetic data with "
            f"`{command}`{elsewhere}"
        )
    try:
        with open(path) as f:
            classes = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(
            f"{path} is unreadable ({e}); regenerate it with "
            f"`{command} --force`{elsewhere}"
        ) from None
    if not isinstance(classes, dict) or classes.get("format") != FORMAT:
        raise DatasetError(
            f"{path} is not a {FORMAT} file; regenerate it with "
            f"`{command} --force`{elsewhere}"
        )
    found = classes.get("profile", "default")  # the default profile's file names none
    if found != profile:
        raise DatasetError(
            f"{path} holds the {found} profile, but the {profile} profile's sets are read from "
            f"this folder; regenerate them with `{command} --force`{elsewhere} (the {found} "
            f"profile belongs in {PROFILE_FOLDERS.get(found, '?')}/)"
        )
    lacking = [key for key in keys if not isinstance(classes.get(key), list)]
    if lacking:
        raise DatasetError(
            f"{path} has no list {lacking[0]!r}; regenerate it with `{command} --force`{elsewhere}"
        )
    return classes
