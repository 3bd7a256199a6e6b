"""The instance-segmentation set: plan each split's images from the image-share schedule, render
the instances and write LVIS v1 json with COCO-style image folders."""
import os
from typing import List

import numpy as np
import pycocotools.mask as mask_util

from .layout import COCO_FOLDER
from .classes import (
    LVIS_BACKGROUND_GREY,
    LVIS_DIAMETERS,
    LVIS_EXTRA_INSTANCES,
    LVIS_MAX_INSTANCES_PER_CATEGORY,
    MIN_OBJECT_DIAMETER,
    PLACEMENT_TRIES,
    SyntheticClass,
    log_spaced,
    lvis_frequency,
    lvis_image_fractions,
)
from .drawing import (
    bbox_of,
    boxes_overlap,
    finish_image,
    paint,
    pixel_grid,
    random_polygon,
    random_position,
    rasterise,
)
from .files import save_jpeg


def plan_lvis_split(classes, num_images, rng, image_counts=None) -> List[List[SyntheticClass]]:
    """Per image, the categories of its instances (one entry per instance), in placing order.

    Each category goes into a fixed number of images (``image_counts``, default from the schedule's
    image shares), so its image count, and with it its LVIS frequency group, is set rather than
    left to chance. The images are the least crowded so far (ties broken at random), which keeps
    every image from overflowing.
    """
    if image_counts is None:
        fractions = lvis_image_fractions(classes)
        image_counts = [int(np.clip(round(f * num_images), 1, num_images)) for f in fractions]
    plans = [[] for _ in range(num_images)]
    for cls, num_with in zip(classes, image_counts):
        num_with = int(num_with)
        extra_mean = LVIS_EXTRA_INSTANCES[cls.group]
        shuffled = rng.permutation(num_images)
        least_crowded = sorted(shuffled, key=lambda i: len(plans[i]))[:num_with]
        for image_index in sorted(least_crowded):
            copies = 1 + min(rng.poisson(extra_mean), LVIS_MAX_INSTANCES_PER_CATEGORY - 1)
            plans[image_index].extend((copy, cls) for copy in range(copies))
    # First copies before extra ones, rarest first: if an image runs out of room, what is dropped
    # is an extra copy of a frequent category, which keeps the image counts on schedule.
    return [[cls for _, cls in sorted(plan, key=lambda p: (p[0], -p[1].index))] for plan in plans]


def instance_diameters(classes, ranks=None):
    """Nominal instance diameter per category index (fraction of the image side), falling with the
    frequency rank (default: the index)."""
    diameters = log_spaced(*LVIS_DIAMETERS, len(classes))
    return diameters if ranks is None else diameters[np.asarray(ranks)]


def _render_lvis_image(plan, diameters, size, rng):
    """RGB image and the instances (category index, polygon, RLE) placed in it."""
    ys, xs = pixel_grid(size)
    grey = rng.uniform(*LVIS_BACKGROUND_GREY)
    slope = rng.uniform(-15, 15, size=2) / size  # a soft lighting gradient
    background = grey + slope[0] * (ys - size / 2) + slope[1] * (xs - size / 2)
    image = np.repeat(background[..., None], 3, axis=2).astype(np.float32)
    image += rng.uniform(-6, 6, size=3).astype(np.float32)  # slight colour cast, still neutral

    instances = []
    placed_boxes = []
    for cls in plan:
        diameter = max(diameters[cls.index] * size * rng.uniform(0.75, 1.25), MIN_OBJECT_DIAMETER)
        shape = random_polygon(rng, diameter)
        points = None
        # Instances never overlap, so each polygon is exactly its visible mask.
        for attempt in range(3 * PLACEMENT_TRIES):
            if attempt and attempt % PLACEMENT_TRIES == 0:
                shape = shape * 0.8
            candidate = random_position(shape, size, rng)
            box = bbox_of(candidate)
            if not any(boxes_overlap(box, other) for other in placed_boxes):
                points = candidate
                break
        if points is None:
            continue
        mask, rle = rasterise(points, size)
        if not mask.any():
            continue
        placed_boxes.append(box)
        paint(image, mask, cls, rng)
        instances.append((cls, points, rle))
    return finish_image(image, rng), instances


def _lvis_image_id(split: str, index: int) -> int:
    # Val ids start far above any train id so the two splits never share an id.
    return index + 1 if split == "train" else 1_000_001 + index


def write_lvis_split(staging, split, plans, classes, size, rng, progress_bar, diameters=None):
    """Render a split's images into coco/<split>2017/ and return its LVIS images/annotations;
    ``diameters``: per category index, default :func:`instance_diameters`."""
    if diameters is None:
        diameters = instance_diameters(classes)
    coco_split = f"{split}2017"
    image_folder = os.path.join(staging, COCO_FOLDER, coco_split)
    os.makedirs(image_folder)
    all_categories = {cls.index + 1 for cls in classes}
    images, annotations = [], []
    for index, plan in enumerate(plans):
        image, instances = _render_lvis_image(plan, diameters, size, rng)
        image_id = _lvis_image_id(split, index)
        file_name = f"{image_id:012d}.jpg"
        save_jpeg(os.path.join(image_folder, file_name), image)
        present = set()
        for cls, points, rle in instances:
            present.add(cls.index + 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls.index + 1,
                    "segmentation": [points.ravel().tolist()],
                    "area": float(mask_util.area(rle)),
                    "bbox": [round(float(v), 2) for v in mask_util.toBbox(rle)],
                }
            )
        images.append(
            {
                "id": image_id,
                "width": size,
                "height": size,
                # Detectron2 takes the split folder and file name from the last two parts.
                "coco_url": f"synthetic/{coco_split}/{file_name}",
                "not_exhaustive_category_ids": [],
                # Every instance is annotated, so all absent categories are verified negatives;
                # listing them lets LVIS evaluation count false positives on them.
                "neg_category_ids": sorted(all_categories - present),
            }
        )
        if progress_bar is not None:
            progress_bar.update(1)
    return images, annotations


def lvis_counts(annotations, num_classes):
    image_counts = np.zeros(num_classes, dtype=np.int64)
    instance_counts = np.zeros(num_classes, dtype=np.int64)
    seen = set()
    for ann in annotations:
        category = ann["category_id"] - 1
        instance_counts[category] += 1
        if (ann["image_id"], category) not in seen:
            seen.add((ann["image_id"], category))
            image_counts[category] += 1
    return image_counts, instance_counts


def lvis_categories(classes, image_counts, instance_counts, published=None):
    """The json's categories with the split's counts. The frequency comes from LVIS's rule on the
    image counts, or, with ``published`` (LVIS's own category dicts by index), LVIS's field, as do
    the synset and synonyms."""
    categories = []
    for cls in classes:
        synset_word = cls.name.replace(" ", "_").replace("-", "_")
        source = published[cls.index] if published is not None else {
            "synset": f"{synset_word}.n.01",
            "synonyms": [cls.name],
            "frequency": lvis_frequency(int(image_counts[cls.index])),
        }
        categories.append(
            {
                "id": cls.index + 1,
                "name": cls.name,
                "synset": source["synset"],
                "synonyms": list(source["synonyms"]),
                "def": cls.description,
                "frequency": source["frequency"],
                "image_count": int(image_counts[cls.index]),
                "instance_count": int(instance_counts[cls.index]),
            }
        )
    return categories
