"""``generate``: one seeded, byte-reproducible synthetic data set under a root folder, written to a
staging folder and moved into place at the end, and ``format_summary`` of what it wrote."""
import os
import shutil
import tempfile
import time
from typing import Dict, List

import numpy as np

from ...errors import DatasetError
from .layout import CLASSES_FILE, FORMAT, LVIS_FOLDER, OUTPUT_ENTRIES, STAGING_PREFIX
from .classes import (
    IGNORE_LABEL,
    MAX_NUM_CLASSES,
    MIN_NUM_CLASSES,
    MIN_SIZE,
    SPLIT_CODES,
    STREAM_LVIS,
    STREAM_SEMANTIC,
    build_classes,
    min_images_per_split,
)
from .files import write_json
from .semantic import cityscapes_label_ids, plan_semantic_split, write_semantic_split
from .lvis import lvis_categories, lvis_counts, plan_lvis_split, write_lvis_split


def _check_arguments(seed, num_classes, num_train, num_val, size):
    if seed < 0:
        raise DatasetError(f"seed must be a non-negative integer (got {seed})")
    if not MIN_NUM_CLASSES <= num_classes <= MAX_NUM_CLASSES:
        raise DatasetError(
            f"the number of classes must be in {MIN_NUM_CLASSES}..{MAX_NUM_CLASSES} "
            f"(got {num_classes}): the long tail needs head, body and tail classes"
        )
    min_images = min_images_per_split(num_classes)
    if min(num_train, num_val) < min_images:
        raise DatasetError(
            f"{num_classes} classes need at least {min_images} training and {min_images} "
            f"validation images, so that every class fits into each split "
            f"(got {num_train} and {num_val})"
        )
    if size < MIN_SIZE:
        raise DatasetError(f"size must be at least {MIN_SIZE} pixels (got {size})")


def _move_into_place(staging: str, root: str) -> None:
    """Swap the staged entries in for the old ones; put everything back if a move fails."""
    replaced = os.path.join(staging, ".replaced")
    os.mkdir(replaced)
    moved_out, moved_in = [], []
    try:
        for entry in OUTPUT_ENTRIES:
            if os.path.lexists(os.path.join(root, entry)):
                os.replace(os.path.join(root, entry), os.path.join(replaced, entry))
                moved_out.append(entry)
        for entry in OUTPUT_ENTRIES:
            os.replace(os.path.join(staging, entry), os.path.join(root, entry))
            moved_in.append(entry)
    except BaseException:
        for entry in reversed(moved_in):
            os.replace(os.path.join(root, entry), os.path.join(staging, entry))
        for entry in moved_out:
            os.replace(os.path.join(replaced, entry), os.path.join(root, entry))
        raise


def generate(
    root: str,
    seed: int = 0,
    num_classes: int = 19,
    num_train: int = 400,
    num_val: int = 100,
    size: int = 64,
    force: bool = False,
    progress: bool = True,
) -> Dict:
    """Write the synthetic data under ``root`` and return a summary of its class statistics.

    Everything is written to a staging folder inside ``root`` first and moved into place at the
    end, so an interrupted run leaves no partial data set. Existing outputs are replaced only
    with ``force``; otherwise :class:`DatasetError` names the first one.
    """
    _check_arguments(seed, num_classes, num_train, num_val, size)
    start = time.perf_counter()
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    if not force:
        for entry in OUTPUT_ENTRIES:
            if os.path.lexists(os.path.join(root, entry)):
                raise DatasetError(
                    f"{os.path.join(root, entry)} already exists; pass --force to replace it"
                )

    classes = build_classes(num_classes)
    splits = {"train": num_train, "val": num_val}
    progress_bar = None
    if progress:
        from tqdm import tqdm

        progress_bar = tqdm(total=2 * (num_train + num_val), desc="synthetic images", unit="img")

    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root)
    try:
        semantic_counts = {}
        label_id_table = cityscapes_label_ids(num_classes)
        for split, num_images in splits.items():
            rng = np.random.default_rng([seed, STREAM_SEMANTIC, SPLIT_CODES[split]])
            plans = plan_semantic_split(classes, num_images, size, rng, split)
            semantic_counts[split] = write_semantic_split(
                staging, split, plans, size, label_id_table, rng, progress_bar
            )

        lvis_splits = {}
        for split, num_images in splits.items():
            rng = np.random.default_rng([seed, STREAM_LVIS, SPLIT_CODES[split]])
            plans = plan_lvis_split(classes, num_images, rng)
            lvis_splits[split] = write_lvis_split(
                staging, split, plans, classes, size, rng, progress_bar
            )
        train_counts = lvis_counts(lvis_splits["train"][1], num_classes)
        categories = lvis_categories(classes, *train_counts)  # counts from TRAIN for both
        os.makedirs(os.path.join(staging, LVIS_FOLDER))
        for split, (images, annotations) in lvis_splits.items():
            lvis_json = {
                "info": {
                    "description": "LongTailSeg synthetic long-tailed instances (LVIS v1 format)",
                    "version": FORMAT,
                    "seed": seed,
                },
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
            write_json(os.path.join(staging, LVIS_FOLDER, f"lvis_v1_{split}.json"), lvis_json)

        names = [c.name for c in classes]
        colors = [list(c.display_color) for c in classes]
        write_json(
            os.path.join(staging, CLASSES_FILE),
            {
                "format": FORMAT,
                "seed": seed,
                "size": size,
                "num_classes": num_classes,
                "stuff_classes": names,
                "stuff_colors": colors,
                "thing_classes": names,
                "thing_colors": colors,
                "splits": splits,
            },
            indent=2,
        )
        _move_into_place(staging, root)
    finally:
        if progress_bar is not None:
            progress_bar.close()
        shutil.rmtree(staging, ignore_errors=True)

    val_counts = lvis_counts(lvis_splits["val"][1], num_classes)
    return {
        "root": root,
        "seed": seed,
        "size": size,
        "num_classes": num_classes,
        "splits": splits,
        "class_names": names,
        "class_groups": [c.group for c in classes],
        "semantic": {
            "train_pixel_counts": semantic_counts["train"][:num_classes].tolist(),
            "train_ignore_pixels": int(semantic_counts["train"][IGNORE_LABEL]),
            "val_pixel_counts": semantic_counts["val"][:num_classes].tolist(),
            "val_ignore_pixels": int(semantic_counts["val"][IGNORE_LABEL]),
        },
        "lvis": {
            "train_image_counts": train_counts[0].tolist(),
            "train_instance_counts": train_counts[1].tolist(),
            "val_image_counts": val_counts[0].tolist(),
            "val_instance_counts": val_counts[1].tolist(),
            "frequencies": [c["frequency"] for c in categories],
        },
        "seconds": time.perf_counter() - start,
    }


def format_summary(summary: Dict) -> List[str]:
    """Human-readable lines about a :func:`generate` summary: the long tail of both sets."""
    names = summary["class_names"]
    counts = np.asarray(summary["semantic"]["train_pixel_counts"], dtype=np.float64)
    labelled = counts.sum()
    ignored = summary["semantic"]["train_ignore_pixels"]
    shares = counts / max(labelled, 1.0)
    ignore = ignored / max(labelled + ignored, 1.0)
    top, bottom = int(shares.argmax()), int(shares.argmin())
    num_head = int((shares > 0.01).sum())
    num_tail = int((shares < 0.001).sum())
    size = summary["size"]
    frequencies = summary["lvis"]["frequencies"]
    return [
        f"wrote synthetic long-tailed data to {summary['root']} in {summary['seconds']:.1f} s",
        f"semantic (train, {summary['splits']['train']} images {size}x{size}): {len(names)} "
        f"classes; max share {100 * shares[top]:.1f}% ({names[top]}); {num_head} > 1%, "
        f"{len(names) - num_head - num_tail} in 0.1-1%, {num_tail} < 0.1% "
        f"(min {100 * shares[bottom]:.3f}%, {names[bottom]}); {100 * ignore:.1f}% ignore",
        f"lvis (train): {len(frequencies)} categories: {frequencies.count('f')} frequent, "
        f"{frequencies.count('c')} common, {frequencies.count('r')} rare; "
        f"{sum(summary['lvis']['train_instance_counts']):,} instances",
    ]
