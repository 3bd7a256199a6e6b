"""The semantic-segmentation set: plan each split's images from the pixel-share schedule, render
them, and write them in the ADEChallengeData2016 and Cityscapes gtFine layouts."""
import os
from dataclasses import dataclass
from typing import List

import numpy as np

from .layout import ADE_FOLDER, CITYSCAPES_CITIES, CITYSCAPES_FOLDER
from .classes import (
    CELLS_PER_IMAGE,
    IGNORE_LABEL,
    MIN_OBJECT_DIAMETER,
    MIN_VAL_CELLS,
    MIN_VAL_OBJECTS,
    OUTLINE_PROBABILITY,
    PLACEMENT_TRIES,
    SyntheticClass,
    semantic_schedule,
)
from .drawing import (
    bbox_of,
    boxes_overlap,
    finish_image,
    outer_ring,
    paint,
    pixel_grid,
    polygon_area,
    random_polygon,
    random_position,
    rasterise,
)
from .files import save_jpeg, save_png, write_json


@dataclass
class _SemanticObject:
    cls: SyntheticClass
    shape: np.ndarray  # polygon centred at 0
    outlined: bool


@dataclass
class _SemanticImagePlan:
    cell_classes: List[SyntheticClass]
    objects: List[_SemanticObject]


def plan_semantic_split(classes, num_images, size, rng, split) -> List[_SemanticImagePlan]:
    """Decide, for a whole split, which head class fills each cell and which objects go where.

    Objects of a class are added until their nominal area reaches the class's pixel budget, so the
    class shares follow the schedule closely at any number of images.
    """
    head_probs, shares, diameters = semantic_schedule(classes)
    heads = [c for c in classes if c.group == "head"]
    object_classes = [c for c in classes if c.group != "head"]
    min_cells, min_objects = (MIN_VAL_CELLS, MIN_VAL_OBJECTS) if split == "val" else (1, 1)

    num_cells = rng.integers(CELLS_PER_IMAGE[0], CELLS_PER_IMAGE[1] + 1, size=num_images)
    slots = [(i, j) for i in range(num_images) for j in range(num_cells[i])]
    drawn = rng.choice(len(heads), size=len(slots), p=head_probs)
    # Guarantee each head class its minimum number of cells, at random slots.
    required = [h for h in range(len(heads)) for _ in range(min_cells)][: len(slots)]
    for slot, head in zip(rng.permutation(len(slots))[: len(required)], required):
        drawn[slot] = head
    plans = [_SemanticImagePlan([], []) for _ in range(num_images)]
    for (image_index, _), head in zip(slots, drawn):
        plans[image_index].cell_classes.append(heads[head])

    budget_scale = num_images * size * size
    for cls, share, diameter in zip(object_classes, shares, diameters):
        budget, placed, count = share * budget_scale, 0.0, 0
        nominal = max(diameter * size, MIN_OBJECT_DIAMETER)
        while placed < budget or count < min_objects:
            shape = random_polygon(rng, nominal * rng.uniform(0.8, 1.2))
            outlined = bool(rng.random() < OUTLINE_PROBABILITY)
            plans[rng.integers(num_images)].objects.append(_SemanticObject(cls, shape, outlined))
            placed += polygon_area(shape)
            count += 1
    for plan in plans:
        # Frequent classes first, so the rarer (smaller) objects are never hidden under them.
        plan.objects.sort(key=lambda o: o.cls.index)
    return plans


def _render_semantic_image(plan: _SemanticImagePlan, size: int, rng: np.random.Generator):
    """RGB image and label map of one planned image."""
    ys, xs = pixel_grid(size)
    seeds = rng.uniform(0, size, size=(len(plan.cell_classes), 2))
    seed_y, seed_x = seeds[:, 0, None, None], seeds[:, 1, None, None]
    cell_of_pixel = ((ys[None] - seed_y) ** 2 + (xs[None] - seed_x) ** 2).argmin(axis=0)

    image = np.zeros((size, size, 3), dtype=np.float32)
    label = np.zeros((size, size), dtype=np.uint8)
    for cell, cls in enumerate(plan.cell_classes):
        mask = cell_of_pixel == cell
        paint(image, mask, cls, rng)
        label[mask] = cls.index
    # A 1-pixel ignore line where cells of different classes meet, as annotators leave.
    boundary = np.zeros((size, size), dtype=bool)
    boundary[:, :-1] |= label[:, :-1] != label[:, 1:]
    boundary[:-1, :] |= label[:-1, :] != label[1:, :]

    covered = np.zeros((size, size), dtype=bool)
    placed_boxes = []
    for obj in plan.objects:
        # Prefer a free place; in a crowded image accept an overlap (later objects on top).
        for _ in range(PLACEMENT_TRIES):
            points = random_position(obj.shape, size, rng)
            box = bbox_of(points)
            if not any(boxes_overlap(box, other) for other in placed_boxes):
                break
        placed_boxes.append(box)
        mask, _ = rasterise(points, size)
        paint(image, mask, obj.cls, rng)
        label[mask] = obj.cls.index
        covered |= mask
        if obj.outlined:
            label[outer_ring(mask) & ~covered] = IGNORE_LABEL
    label[boundary & ~covered] = IGNORE_LABEL
    return finish_image(image, rng), label


def cityscapes_label_ids(num_classes: int) -> np.ndarray:
    """Lookup table trainId -> Cityscapes labelId; identity unless there are 19 classes."""
    table = np.arange(256, dtype=np.uint8)
    if num_classes == 19:
        from cityscapesscripts.helpers.labels import trainId2label

        for train_id in range(19):
            table[train_id] = trainId2label[train_id].id
        table[IGNORE_LABEL] = 0  # "unlabeled"
    return table


def write_semantic_split(staging, split, plans, size, label_id_table, rng, progress_bar):
    """Render a split and write it in the ADE20K and the Cityscapes layouts; return pixel counts."""
    ade_split = "training" if split == "train" else "validation"
    ade_prefix = "ADE_train" if split == "train" else "ADE_val"
    ade_images = os.path.join(staging, ADE_FOLDER, "images", ade_split)
    ade_labels = os.path.join(staging, ADE_FOLDER, "annotations_detectron2", ade_split)
    city = CITYSCAPES_CITIES[split]
    city_images = os.path.join(staging, CITYSCAPES_FOLDER, "leftImg8bit", split, city)
    city_labels = os.path.join(staging, CITYSCAPES_FOLDER, "gtFine", split, city)
    for folder in (ade_images, ade_labels, city_images, city_labels):
        os.makedirs(folder)
    polygons = {"imgHeight": size, "imgWidth": size, "objects": []}

    pixel_counts = np.zeros(256, dtype=np.int64)
    for index, plan in enumerate(plans):
        image, label = _render_semantic_image(plan, size, rng)
        pixel_counts += np.bincount(label.ravel(), minlength=256)
        ade_stem = f"{ade_prefix}_{index + 1:08d}"
        save_jpeg(os.path.join(ade_images, ade_stem + ".jpg"), image)
        save_png(os.path.join(ade_labels, ade_stem + ".png"), label)

        city_stem = f"{city}_000000_{index:06d}"
        save_png(os.path.join(city_images, city_stem + "_leftImg8bit.png"), image)
        gt = os.path.join(city_labels, city_stem + "_gtFine_")
        save_png(gt + "labelTrainIds.png", label)
        save_png(gt + "labelIds.png", label_id_table[label])
        # Cityscapes instanceIds are 16-bit; with no instance ids they equal the labelIds.
        save_png(gt + "instanceIds.png", label_id_table[label].astype(np.uint16))
        write_json(gt + "polygons.json", polygons)
        if progress_bar is not None:
            progress_bar.update(1)
    return pixel_counts
