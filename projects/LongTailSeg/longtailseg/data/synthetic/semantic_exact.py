"""A semantic split whose class pixel counts are exact targets (the ``ade20k`` profile).

Each class gets exactly its target number of labelled pixels over the split, so its share of all
pixels (ignored ones included) is the profile's ratio to the pixel. Built in four steps:

1. objects of the non-head classes are pasted, never overlapping, until each class has at least
   its target (the last object of a class is sized to what is missing);
2. each image's Voronoi cells are given head classes, greedily, until every head class has at least
   its target of uncovered pixels (the cell goes to the head class furthest below its target,
   relative to it);
3. the image is painted from this full label map;
4. each class's pixels beyond its target become ignore (255) in the label, boundary pixels first,
   layer by layer, like the unlabelled seams of real annotations. The ignored pixels make up
   the rest to 100 % (7.25 % for ADE20K's ratios, which sum to 0.9275).
"""
import math
from typing import Sequence

import numpy as np

from ...errors import DatasetError
from .classes import (
    CELLS_PER_IMAGE,
    IGNORE_LABEL,
    MIN_OBJECT_DIAMETER,
    OBJECT_DIAMETERS,
    PLACEMENT_TRIES,
    SyntheticClass,
    log_spaced,
)
from .drawing import finish_image, paint, pixel_grid, random_polygon, random_position, rasterise


def _voronoi_cells(num_images, size, rng):
    ys, xs = pixel_grid(size)
    cells = np.zeros((num_images, size, size), dtype=np.int16)
    counts = rng.integers(CELLS_PER_IMAGE[0], CELLS_PER_IMAGE[1] + 1, size=num_images)
    for i, count in enumerate(counts):
        seeds = rng.uniform(0, size, size=(count, 2))
        distances = (ys[None] - seeds[:, 0, None, None]) ** 2 + (xs[None] - seeds[:, 1, None, None]) ** 2
        cells[i] = distances.argmin(axis=0)
    return cells, counts


def _paste_objects(object_classes, targets, num_images, size, rng, what):
    """Non-overlapping objects until each class covers at least its target; returns the object
    label map (255 where none) and, per image, the (class, mask) list in pasting order."""
    labels = np.full((num_images, size, size), IGNORE_LABEL, dtype=np.uint8)
    objects = [[] for _ in range(num_images)]
    diameters = log_spaced(*OBJECT_DIAMETERS, len(object_classes)) * size
    for cls, diameter in zip(object_classes, diameters):
        placed = 0
        while placed < targets[cls.index]:
            missing = targets[cls.index] - placed
            nominal = max(diameter, MIN_OBJECT_DIAMETER)
            if missing < math.pi / 4 * nominal ** 2:
                nominal = max(math.sqrt(4 * missing / math.pi), MIN_OBJECT_DIAMETER)
            shape = random_polygon(rng, nominal * rng.uniform(0.9, 1.1))
            for attempt in range(3 * PLACEMENT_TRIES):
                if attempt and attempt % PLACEMENT_TRIES == 0:
                    shape = shape * 0.8
                image = int(rng.integers(num_images))
                mask, _ = rasterise(random_position(shape, size, rng), size)
                if mask.any() and not (labels[image][mask] != IGNORE_LABEL).any():
                    break
            else:
                raise DatasetError(
                    f"{what}: no free place left for another {cls.name!r} object; "
                    "use more images (--num-images / --num-val-images) or a larger --size"
                )
            labels[image][mask] = cls.index
            objects[image].append((cls, mask))
            placed += int(mask.sum())
    return labels, objects


def _assign_heads(heads, targets, cells, num_cells, covered):
    """Head class per (image, cell): largest uncovered cells first, each to the head class
    furthest below its target relative to it."""
    areas = [((cells[i] == j) & ~covered[i]).sum() for i in range(len(num_cells))
             for j in range(num_cells[i])]
    slots = [(i, j) for i in range(len(num_cells)) for j in range(num_cells[i])]
    head_targets = np.array([targets[h.index] for h in heads], dtype=np.float64)
    assigned = np.zeros(len(heads))
    choice = {}
    for k in np.argsort(-np.asarray(areas), kind="stable"):
        h = int(np.argmax((head_targets - assigned) / head_targets))
        choice[slots[k]] = heads[h]
        assigned[h] += areas[k]
    return [[choice[(i, j)] for j in range(num_cells[i])] for i in range(len(num_cells))]


def _boundary(labels, value):
    """Pixels equal to ``value`` that are 4-adjacent to a pixel with another label."""
    inside = labels == value
    other = np.zeros_like(inside)
    other[:, 1:, :] |= labels[:, :-1, :] != value
    other[:, :-1, :] |= labels[:, 1:, :] != value
    other[:, :, 1:] |= labels[:, :, :-1] != value
    other[:, :, :-1] |= labels[:, :, 1:] != value
    return inside & other


def _trim_to_targets(labels, targets, rng):
    """Set each class's surplus pixels to ignore, outermost layer first."""
    counts = np.bincount(labels.ravel(), minlength=256)
    for c, target in enumerate(targets):
        surplus = int(counts[c] - target)
        while surplus > 0:
            layer = _boundary(labels, c)
            if not layer.any():  # a class alone in all its images: no seam to start from
                layer = labels == c
            where = np.flatnonzero(layer)
            if len(where) > surplus:
                where = rng.choice(where, size=surplus, replace=False)
            labels.ravel()[where] = IGNORE_LABEL
            surplus -= len(where)


def render_exact_split(classes: Sequence[SyntheticClass], targets: np.ndarray, num_images: int,
                       size: int, rng: np.random.Generator, what: str, progress_bar=None):
    """Images (N, size, size, 3) uint8 and labels (N, size, size) uint8 of a split in which class
    c has exactly ``targets[c]`` labelled pixels; ``what`` names the split in errors."""
    heads = [c for c in classes if c.group == "head"]
    object_classes = [c for c in classes if c.group != "head"]
    cells, num_cells = _voronoi_cells(num_images, size, rng)
    object_labels, objects = _paste_objects(object_classes, targets, num_images, size, rng, what)
    covered = object_labels != IGNORE_LABEL
    cell_classes = _assign_heads(heads, targets, cells, num_cells, covered)

    labels = object_labels.copy()
    images = np.zeros((num_images, size, size, 3), dtype=np.uint8)
    for i in range(num_images):
        image = np.zeros((size, size, 3), dtype=np.float32)
        for j, cls in enumerate(cell_classes[i]):
            mask = cells[i] == j
            paint(image, mask, cls, rng)
            labels[i][mask & ~covered[i]] = cls.index
        for cls, mask in objects[i]:
            paint(image, mask, cls, rng)
        images[i] = finish_image(image, rng)
        if progress_bar is not None:
            progress_bar.update(1)
    counts = np.bincount(labels.ravel(), minlength=256)[: len(classes)]
    short = [c.name for c in classes if counts[c.index] < targets[c.index]]
    if short:
        raise DatasetError(
            f"{what}: {num_images} images of {size}x{size} leave too few pixels for the exact "
            f"shares of {len(short)} classes (e.g. {short[0]!r}); use more images or a larger --size"
        )
    _trim_to_targets(labels, targets, rng)
    return images, labels

