"""Class profiles of the real data sets for the synthetic generator.

``ade20k``: 150 classes whose shares of the training pixels are ADE20K's published per-class
Ratio column (share of all pixels, unlabelled ones included; the 150 ratios sum to 0.9275, the
rest is unlabelled). The values are those of ``objectInfo150.txt`` of the SceneParsing benchmark
(github.com/CSAILVision/sceneparsing, BSD 3-Clause licence, (c) 2019 MIT CSAIL Computer Vision),
in its order, which is also descending Ratio order. With DisAlign's rule (head > 1 %, tail <= 0.1 %
of all pixels) they give its 20 / 55 / 75 head / body / tail classes.

``lvis_v1``: LVIS v1's 1203 categories (names and r / c / f frequency from Detectron2's
``lvis_v1_categories``: 337 rare, 461 common, 405 frequent) with per-category training image
counts from Detectron2's ``lvis_v1_category_image_count`` where the installed Detectron2 ships it
(its main branch does, v0.6 does not); otherwise each category gets the geometric middle of its
group's LVIS range (r 1-10, c 11-100, f 101-1977 images), and the data set records which source it
used. Both tables are read at run time from the installed Detectron2, never copied here.
"""
import math
from dataclasses import replace
from typing import Dict, List, Sequence

import numpy as np

from .classes import LVIS_COMMON_MAX_IMAGES, LVIS_RARE_MAX_IMAGES, SyntheticClass, build_classes

PROFILES = ("default", "ade20k", "lvis_v1")

# DisAlign's ADE20K grouping rule on shares of all pixels.
ADE20K_HEAD_SHARE = 0.01
ADE20K_TAIL_SHARE = 0.001
# Cityscapes' 19 evaluated classes (trainId order): each class's share of all pixels of the fine
# annotations, in per cent, unlabelled ones included (the 19 sum to 88.4 %), as tabulated in the
# "pixel-wise occ [%]" column of github.com/m-birke/automotive-segmentation-datasets/cityscapes.md
# (a count of the gtFine labels; the Cityscapes paper's Fig. 1 plots the same counts on a log
# scale). configs/cityscapes/deeplab_v3_plus_R_50.yaml's group thresholds are chosen on them.
CITYSCAPES_PIXEL_PERCENT = (
    ("road", 32.7), ("sidewalk", 5.3), ("building", 20.1), ("wall", 0.59), ("fence", 0.77),
    ("pole", 1.1243), ("traffic light", 0.1823), ("traffic sign", 0.5015), ("vegetation", 14.3),
    ("terrain", 0.98), ("sky", 3.5), ("person", 1.1), ("rider", 0.1295), ("car", 6.0),
    ("truck", 0.2406), ("bus", 0.2271), ("train", 0.1907), ("motorcycle", 0.0848), ("bicycle", 0.4030),
)
# objectInfo150.txt's Ratio column, Idx 1..150 (source and licence in the module docstring).
ADE20K_RATIOS = (
    0.1576, 0.1072, 0.0878, 0.0621, 0.0480, 0.0450, 0.0398, 0.0231, 0.0198, 0.0183,
    0.0181, 0.0166, 0.0160, 0.0151, 0.0118, 0.0110, 0.0109, 0.0104, 0.0104, 0.0103,
    0.0098, 0.0074, 0.0067, 0.0065, 0.0061, 0.0060, 0.0053, 0.0052, 0.0046, 0.0044,
    0.0044, 0.0044, 0.0033, 0.0031, 0.0030, 0.0027, 0.0026, 0.0024, 0.0024, 0.0023,
    0.0023, 0.0022, 0.0022, 0.0020, 0.0019, 0.0019, 0.0018, 0.0018, 0.0018, 0.0018,
    0.0018, 0.0018, 0.0018, 0.0017, 0.0017, 0.0017, 0.0017, 0.0017, 0.0015, 0.0015,
    0.0015, 0.0015, 0.0014, 0.0014, 0.0014, 0.0014, 0.0014, 0.0013, 0.0013, 0.0013,
    0.0012, 0.0012, 0.0012, 0.0012, 0.0011, 0.0010, 0.0009, 0.0009, 0.0009, 0.0009,
    0.0009, 0.0008, 0.0008, 0.0008, 0.0008, 0.0008, 0.0007, 0.0007, 0.0007, 0.0007,
    0.0007, 0.0007, 0.0007, 0.0006, 0.0006, 0.0006, 0.0006, 0.0006, 0.0006, 0.0006,
    0.0006, 0.0006, 0.0006, 0.0006, 0.0005, 0.0005, 0.0005, 0.0005, 0.0005, 0.0005,
    0.0005, 0.0005, 0.0005, 0.0005, 0.0005, 0.0005, 0.0005, 0.0005, 0.0005, 0.0005,
    0.0005, 0.0004, 0.0004, 0.0004, 0.0004, 0.0004, 0.0004, 0.0004, 0.0004, 0.0004,
    0.0004, 0.0004, 0.0004, 0.0004, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003,
    0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0002, 0.0002, 0.0002,
)

# LVIS v1 image counts per category are compressed to count ** LVIS_COUNT_EXPONENT, then scaled so
# that an image holds LVIS_PROFILE_CATEGORIES_PER_IMAGE categories on average (at least one image
# each): the order of the categories is kept, their ratios become square roots.
LVIS_COUNT_EXPONENT = 0.5
LVIS_PROFILE_CATEGORIES_PER_IMAGE = 3.5
# Ranges of LVIS's frequency groups in training images (the largest v1 count is 1977), for the
# fallback when the installed Detectron2 has no per-category image counts.
LVIS_FREQUENT_MAX_IMAGES = 1977
IMAGE_COUNT_SOURCE_DETECTRON2 = "detectron2.data.datasets.lvis_v1_category_image_count"
IMAGE_COUNT_SOURCE_GROUP_RANGES = "geometric middle of each LVIS frequency group's range"


def share_group(share: float) -> str:
    """DisAlign's ADE20K group of a share of all pixels."""
    if share > ADE20K_HEAD_SHARE:
        return "head"
    return "tail" if share <= ADE20K_TAIL_SHARE else "body"


def ade20k_classes() -> List[SyntheticClass]:
    """150 classes in Ratio order; the head classes (plain colours of the first 20 families) fill
    the background cells, the others are pasted objects. Appearance as the 150-class default set."""
    return [replace(cls, group=share_group(ratio))
            for cls, ratio in zip(build_classes(len(ADE20K_RATIOS)), ADE20K_RATIOS)]


def exact_pixel_targets(num_pixels: int, ratios: Sequence[float] = ADE20K_RATIOS) -> np.ndarray:
    """Pixels per class so that count / num_pixels is the ratio to the nearest pixel, nudged where
    rounding would move a class across a group threshold (so the groups are the ratios' groups).
    Every class gets at least one pixel."""
    order = {"tail": 0, "body": 1, "head": 2}
    targets = np.maximum(1, np.rint(np.asarray(ratios) * num_pixels)).astype(np.int64)
    for c, ratio in enumerate(ratios):
        wanted = order[share_group(ratio)]
        while order[share_group(targets[c] / num_pixels)] != wanted:
            targets[c] += 1 if order[share_group(targets[c] / num_pixels)] < wanted else -1
    return targets


def lvis_v1_categories() -> Dict:
    """LVIS v1's categories from the installed Detectron2: ids, names, synonyms, synsets,
    frequencies, and per-category training image counts with where they came from."""
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    categories = sorted(LVIS_CATEGORIES, key=lambda c: c["id"])
    try:
        from detectron2.data.datasets.lvis_v1_category_image_count import (
            LVIS_CATEGORY_IMAGE_COUNT,
        )
    except ImportError:
        middles = {"r": math.sqrt(1 * LVIS_RARE_MAX_IMAGES),
                   "c": math.sqrt((LVIS_RARE_MAX_IMAGES + 1) * LVIS_COMMON_MAX_IMAGES),
                   "f": math.sqrt((LVIS_COMMON_MAX_IMAGES + 1) * LVIS_FREQUENT_MAX_IMAGES)}
        counts = [middles[c["frequency"]] for c in categories]
        source = IMAGE_COUNT_SOURCE_GROUP_RANGES
    else:
        by_id = {c["id"]: c["image_count"] for c in LVIS_CATEGORY_IMAGE_COUNT}
        counts = [by_id[c["id"]] for c in categories]
        source = IMAGE_COUNT_SOURCE_DETECTRON2
    return {"categories": categories, "image_counts": np.asarray(counts, dtype=np.float64),
            "image_count_source": source}


def scaled_image_counts(image_counts: Sequence[float], num_images: int,
                        per_image: float = LVIS_PROFILE_CATEGORIES_PER_IMAGE) -> np.ndarray:
    """Per category, the number of images (of ``num_images``) that hold it: LVIS's counts to the
    power LVIS_COUNT_EXPONENT, scaled to ``per_image`` categories per image, at least 1 each."""
    compressed = np.asarray(image_counts, dtype=np.float64) ** LVIS_COUNT_EXPONENT
    budget = per_image * num_images
    # The scale that fills the budget after rounding and the floor of 1 (bisection, monotone).
    low, high = 0.0, budget / compressed.sum() * 4 + 1.0
    for _ in range(60):
        middle = (low + high) / 2
        total = np.maximum(1, np.rint(middle * compressed)).sum()
        low, high = (middle, high) if total <= budget else (low, middle)
    return np.clip(np.maximum(1, np.rint(low * compressed)), 1, num_images).astype(np.int64)


def lvis_v1_classes(image_counts: Sequence[float], categories: Sequence[Dict]) -> List[SyntheticClass]:
    """One class per LVIS category (index = category id - 1, LVIS's name), group from its
    frequency (f head, c body, r tail); the appearance is that of the default design's class of
    the same frequency rank (most images first), so frequent categories get the plain colours."""
    order = np.argsort(-np.asarray(image_counts), kind="stable")
    designs = build_classes(len(categories))
    groups = {"f": "head", "c": "body", "r": "tail"}
    classes = [None] * len(categories)
    for rank, index in enumerate(order):
        category = categories[index]
        classes[index] = replace(designs[rank], index=int(index), name=category["name"],
                                 group=groups[category["frequency"]])
    return classes
