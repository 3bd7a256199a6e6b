"""``generate``: one seeded, byte-reproducible synthetic data set under a root folder, written to a
staging folder and moved into place at the end, and ``format_summary`` of what it wrote."""
import os
import shutil
import tempfile
import time
from typing import Dict, List

import numpy as np

from ...errors import DatasetError
from .layout import (
    ADE_FOLDER,
    CLASSES_FILE,
    FORMAT,
    LVIS_FOLDER,
    OUTPUT_ENTRIES,
    PROFILE_OUTPUT_ENTRIES,
    STAGING_PREFIX,
)
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
from .files import save_jpeg, save_png, write_json
from .semantic import cityscapes_label_ids, plan_semantic_split, write_semantic_split
from .semantic_exact import render_exact_split
from .lvis import (
    instance_diameters,
    lvis_categories,
    lvis_counts,
    plan_lvis_split,
    write_lvis_split,
)
from . import profiles


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


def _move_into_place(staging: str, root: str, entries=OUTPUT_ENTRIES) -> None:
    """Swap the staged entries in for the old ones; put everything back if a move fails."""
    replaced = os.path.join(staging, ".replaced")
    os.mkdir(replaced)
    moved_out, moved_in = [], []
    try:
        for entry in entries:
            if os.path.lexists(os.path.join(root, entry)):
                os.replace(os.path.join(root, entry), os.path.join(replaced, entry))
                moved_out.append(entry)
        for entry in entries:
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


# Sizes of the profile sets: small enough to train on a CPU in minutes.
PROFILE_DEFAULTS = {
    "ade20k": dict(num_train=300, num_val=100, size=64),
    "lvis_v1": dict(num_train=1000, num_val=400, size=64),
}
STREAM_PROFILE = {"ade20k": 3, "lvis_v1": 4}


def _check_profile_arguments(profile, seed, num_train, num_val, size):
    if profile not in PROFILE_DEFAULTS:
        raise DatasetError(f"unknown profile {profile!r}; use one of {', '.join(PROFILE_DEFAULTS)}")
    if seed < 0:
        raise DatasetError(f"seed must be a non-negative integer (got {seed})")
    if size < MIN_SIZE:
        raise DatasetError(f"size must be at least {MIN_SIZE} pixels (got {size})")
    if profile == "lvis_v1":
        min_images = int(np.ceil(len(profiles.lvis_v1_categories()["categories"])
                                 / profiles.LVIS_PROFILE_CATEGORIES_PER_IMAGE))
        if min(num_train, num_val) < min_images:
            raise DatasetError(
                f"the lvis_v1 profile needs at least {min_images} training and {min_images} "
                f"validation images, so that every category fits into each split "
                f"(got {num_train} and {num_val})"
            )


def _write_ade_split(staging, split, images, labels):
    ade_split, prefix = ("training", "ADE_train") if split == "train" else ("validation", "ADE_val")
    image_folder = os.path.join(staging, ADE_FOLDER, "images", ade_split)
    label_folder = os.path.join(staging, ADE_FOLDER, "annotations_detectron2", ade_split)
    os.makedirs(image_folder)
    os.makedirs(label_folder)
    for index, (image, label) in enumerate(zip(images, labels)):
        stem = f"{prefix}_{index + 1:08d}"
        save_jpeg(os.path.join(image_folder, stem + ".jpg"), image)
        save_png(os.path.join(label_folder, stem + ".png"), label)


def generate_profile(root: str, profile: str, seed: int = 0, num_train=None, num_val=None,
                     size=None, force: bool = False, progress: bool = True) -> Dict:
    """Write a set with a real data set's class profile (``profiles.py``) under ``root``:
    ``ade20k`` the ADEChallengeData2016 layout, ``lvis_v1`` LVIS v1 json + COCO image folders.
    Staged and moved into place as :func:`generate`; returns a summary."""
    defaults = PROFILE_DEFAULTS.get(profile, {})
    num_train = defaults.get("num_train") if num_train is None else num_train
    num_val = defaults.get("num_val") if num_val is None else num_val
    size = defaults.get("size") if size is None else size
    _check_profile_arguments(profile, seed, num_train, num_val, size)
    start = time.perf_counter()
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    entries = PROFILE_OUTPUT_ENTRIES[profile]
    if not force:
        for entry in entries:
            if os.path.lexists(os.path.join(root, entry)):
                raise DatasetError(
                    f"{os.path.join(root, entry)} already exists; pass --force to replace it"
                )
    splits = {"train": num_train, "val": num_val}
    progress_bar = None
    if progress:
        from tqdm import tqdm

        progress_bar = tqdm(total=num_train + num_val, desc=f"{profile} profile images", unit="img")
    summary = {"root": root, "profile": profile, "seed": seed, "size": size, "splits": splits}
    extra = {}
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root)
    try:
        if profile == "ade20k":
            classes = profiles.ade20k_classes()
            pixel_counts = {}
            for split, num_images in splits.items():
                rng = np.random.default_rng([seed, STREAM_PROFILE[profile], SPLIT_CODES[split]])
                targets = profiles.exact_pixel_targets(num_images * size * size)
                images, labels = render_exact_split(classes, targets, num_images, size, rng,
                                                    f"{split} split", progress_bar)
                _write_ade_split(staging, split, images, labels)
                pixel_counts[split] = np.bincount(labels.ravel(), minlength=256)
            summary["semantic"] = {f"{split}_{key}": value for split, counts in pixel_counts.items()
                                   for key, value in (("pixel_counts", counts[:len(classes)].tolist()),
                                                      ("ignore_pixels", int(counts[IGNORE_LABEL])))}
            extra = {"ratio_source": "ADE20K objectInfo150.txt Ratio column (SceneParsing, BSD-3)"}
        else:
            published = profiles.lvis_v1_categories()
            categories = published["categories"]
            classes = profiles.lvis_v1_classes(published["image_counts"], categories)
            ranks = np.empty(len(classes), dtype=np.int64)
            ranks[np.argsort(-published["image_counts"], kind="stable")] = np.arange(len(classes))
            diameters = instance_diameters(classes, ranks)
            lvis_splits = {}
            for split, num_images in splits.items():
                rng = np.random.default_rng([seed, STREAM_PROFILE[profile], SPLIT_CODES[split]])
                counts = profiles.scaled_image_counts(published["image_counts"], num_images)
                plans = plan_lvis_split(classes, num_images, rng, image_counts=counts)
                lvis_splits[split] = write_lvis_split(staging, split, plans, classes, size, rng,
                                                      progress_bar, diameters=diameters)
            train_counts = lvis_counts(lvis_splits["train"][1], len(classes))
            json_categories = lvis_categories(classes, *train_counts, published=categories)
            os.makedirs(os.path.join(staging, LVIS_FOLDER))
            for split, (images, annotations) in lvis_splits.items():
                write_json(os.path.join(staging, LVIS_FOLDER, f"lvis_v1_{split}.json"), {
                    "info": {
                        "description": "LongTailSeg synthetic instances with LVIS v1's category "
                                       "profile (LVIS v1 format)",
                        "version": FORMAT,
                        "seed": seed,
                        "image_count_source": published["image_count_source"],
                    },
                    "licenses": [],
                    "images": images,
                    "annotations": annotations,
                    "categories": json_categories,
                })
            val_counts = lvis_counts(lvis_splits["val"][1], len(classes))
            summary["lvis"] = {
                "train_image_counts": train_counts[0].tolist(),
                "train_instance_counts": train_counts[1].tolist(),
                "val_image_counts": val_counts[0].tolist(),
                "frequencies": [c["frequency"] for c in json_categories],
                "image_count_source": published["image_count_source"],
            }
            extra = {"image_count_source": published["image_count_source"]}

        names = [c.name for c in classes]
        colors = [list(c.display_color) for c in classes]
        kind = "stuff" if profile == "ade20k" else "thing"
        write_json(
            os.path.join(staging, CLASSES_FILE),
            {
                "format": FORMAT,
                "profile": profile,
                "seed": seed,
                "size": size,
                "num_classes": len(classes),
                f"{kind}_classes": names,
                f"{kind}_colors": colors,
                "splits": splits,
                **extra,
            },
            indent=2,
        )
        _move_into_place(staging, root, entries)
    finally:
        if progress_bar is not None:
            progress_bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    summary.update(num_classes=len(classes), class_names=names,
                   class_groups=[c.group for c in classes],
                   seconds=time.perf_counter() - start)
    return summary


def format_profile_summary(summary: Dict) -> List[str]:
    """Human-readable lines about a :func:`generate_profile` summary."""
    size, splits = summary["size"], summary["splits"]
    lines = [f"wrote the {summary['profile']} profile set to {summary['root']} in "
             f"{summary['seconds']:.1f} s ({splits['train']} training and {splits['val']} "
             f"validation images, {size}x{size})"]
    if "semantic" in summary:
        counts = np.asarray(summary["semantic"]["train_pixel_counts"], dtype=np.float64)
        total = counts.sum() + summary["semantic"]["train_ignore_pixels"]
        groups = [profiles.share_group(c / total) for c in counts]
        lines.append(
            f"semantic (train): {len(counts)} classes, shares of all pixels {100 * counts.max() / total:.2f}% "
            f"to {100 * counts.min() / total:.3f}%; {groups.count('head')} > 1%, "
            f"{groups.count('body')} in (0.1%, 1%], {groups.count('tail')} <= 0.1%; "
            f"{100 * summary['semantic']['train_ignore_pixels'] / total:.2f}% ignore"
        )
    else:
        lvis = summary["lvis"]
        image_counts = lvis["train_image_counts"]
        frequencies = lvis["frequencies"]
        by_group = {g: [n for n, f in zip(image_counts, frequencies) if f == g] for g in "rcf"}
        lines.append(
            f"lvis (train): {len(frequencies)} categories: {frequencies.count('f')} frequent, "
            f"{frequencies.count('c')} common, {frequencies.count('r')} rare (LVIS v1's field); "
            + ", ".join(f"{g} in {min(v)}-{max(v)} images" for g, v in by_group.items() if v)
            + f"; {sum(lvis['train_instance_counts']):,} instances; image counts from "
            f"{lvis['image_count_source']}"
        )
    return lines
