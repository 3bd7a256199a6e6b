"""Synthetic long-tailed segmentation data in the real on-disk formats.

:func:`generate` writes one seeded, byte-reproducible data set under a root folder:

* a semantic-segmentation set in two layouts, ``ADEChallengeData2016/`` (JPEG images,
  ``annotations_detectron2`` PNG labels) and ``cityscapes/`` (``leftImg8bit`` + ``gtFine``);
* an instance-segmentation set as LVIS v1 json (``lvis/``) with its images in ``coco/``;
* ``synthetic_classes.json``, the class names and colours the dataset registration reads.

The content is built to show the long-tail problem at toy scale. Classes come in colour families:
the family's frequent "head" class is a plain, noisy colour; its rarer classes carry a texture
(stripes, checks, dots, grid) on the same base colour, so they are learnable from local
appearance but easy to confuse with the head class. Semantic images are a few Voronoi cells of
head classes with body and tail objects pasted on top; each class's share of the training pixels
follows a fixed, steep schedule (head > 1 %, body 0.1-1 %, tail < 0.1 %, tail objects also small).
LVIS images hold non-overlapping instances on a neutral grey background, with the number of
training images per category falling steeply so that LVIS's rule gives rare, common and frequent
categories.

This module imports only numpy, Pillow and pycocotools (and, for the Cityscapes label ids at
19 classes, cityscapesscripts); never Detectron2.
"""
import functools
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from ..errors import DatasetError

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

IGNORE_LABEL = 255
MIN_NUM_CLASSES = 6
MAX_NUM_CLASSES = 150  # ADE20K's size; beyond it the colour families get hard to tell apart
MIN_SIZE = 32
JPEG_QUALITY = 95
CITYSCAPES_CITIES = {"train": "synthburg", "val": "synthstadt"}
# LVIS's frequency rule on the number of training images that contain a category.
LVIS_RARE_MAX_IMAGES = 10
LVIS_COMMON_MAX_IMAGES = 100

# Colour families, well apart in hue; no grey, which is the LVIS background.
FAMILY_PALETTE = (
    ("red", (200, 45, 45)),
    ("green", (50, 160, 65)),
    ("blue", (45, 85, 210)),
    ("yellow", (225, 200, 50)),
    ("violet", (145, 65, 195)),
    ("orange", (235, 125, 35)),
    ("teal", (35, 165, 165)),
    ("pink", (235, 120, 180)),
    ("brown", (135, 85, 45)),
    ("olive", (130, 135, 20)),
)
PLAIN = "plain"
# Textures of the rarer family members; the dark pixels are the base colour times TEXTURE_DARKEN.
TEXTURES = ("h-striped", "v-striped", "checkered", "dotted", "d-striped", "grid")
TEXTURE_DESCRIPTIONS = {
    PLAIN: "plain",
    "h-striped": "horizontally striped",
    "v-striped": "vertically striped",
    "checkered": "checkered",
    "dotted": "dotted",
    "d-striped": "diagonally striped",
    "grid": "grid-patterned",
}
TEXTURE_DARKEN = 0.6
# Colour of the rarer family members: share of white (+) or black (-) mixed into the family
# colour, per rarity level 1, 2, 3, ...
LEVEL_COLOR_MIX = (0.35, -0.45, 0.7)

# Appearance noise: a per-region colour offset and per-pixel noise make the classes more than a
# colour lookup; a per-image brightness factor varies the lighting.
REGION_JITTER = 14.0
PIXEL_NOISE_SIGMA = 9.0
BRIGHTNESS_RANGE = (0.9, 1.1)

# Semantic set: pixel-share schedule (fractions of all pixels of a split) and object sizes.
HEAD_FRACTION = 0.26  # ~5 head classes of 19
HEAD_LAST_WEIGHT = 0.08  # weight of the rarest head class relative to the most frequent one
BODY_SHARES = (0.0095, 0.0025)  # first and last body class, log-spaced in between
TAIL_SHARES = (0.00095, 0.0005)  # first and last tail class
OBJECT_DIAMETERS = (0.34, 0.2)  # first body and last tail class, as fractions of the image side
MIN_OBJECT_DIAMETER = 6.0  # pixels: the smallest object still shows a texture period
CELLS_PER_IMAGE = (2, 4)
OUTLINE_PROBABILITY = 0.3  # share of objects with a 1-pixel ignore outline
MIN_VAL_OBJECTS = 3  # every object class at least this often in val...
MIN_VAL_CELLS = 2  # ...and every head class in at least this many val cells

# LVIS set: share of a split's images that contain a category, log-spaced within each group.
LVIS_HEAD_IMAGE_FRACTIONS = (0.7, 0.3)
LVIS_REST_IMAGE_FRACTIONS = (0.2, 0.004)
LVIS_EXTRA_INSTANCES = {"head": 0.8, "body": 0.4, "tail": 0.1}  # Poisson mean of extra copies
LVIS_MAX_INSTANCES_PER_CATEGORY = 4
LVIS_MAX_CATEGORIES_PER_IMAGE = 3.5  # on average; keeps 64x64 images from overflowing
LVIS_DIAMETERS = (0.26, 0.16)  # most and least frequent category, fractions of the image side
LVIS_BACKGROUND_GREY = (95, 165)
PLACEMENT_TRIES = 25

# Random streams: one per (set, split), so that each part is reproducible on its own.
_STREAM_SEMANTIC = 1
_STREAM_LVIS = 2
_SPLIT_CODES = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticClass:
    """One class (semantic) / category (LVIS): its rank, name and appearance."""

    index: int  # 0 = most frequent
    name: str
    family: str
    texture: str
    group: str  # "head", "body" or "tail" by design
    base_color: Tuple[int, int, int]
    display_color: Tuple[int, int, int]  # unique colour for visualisation

    @property
    def description(self) -> str:
        return f"a {TEXTURE_DESCRIPTIONS[self.texture]} {self.family} region or object"


# ---------------------------------------------------------------------------------------------
# Classes and schedules
# ---------------------------------------------------------------------------------------------


def num_head_classes(num_classes: int) -> int:
    """Number of head classes = colour families (each family has one plain head class)."""
    return max(2, round(HEAD_FRACTION * num_classes), math.ceil(num_classes / (1 + len(TEXTURES))))


def _family_colors(num_families: int) -> List[Tuple[str, Tuple[int, int, int]]]:
    if num_families <= len(FAMILY_PALETTE):
        return list(FAMILY_PALETTE[:num_families])
    # More families than named colours: evenly spaced hues, every other one darker.
    families = []
    for i in range(num_families):
        hue = i / num_families
        value = 0.85 if i % 2 == 0 else 0.6
        rgb = _hsv_to_rgb(hue, 0.75, value)
        families.append((f"hue{round(hue * 360):03d}", rgb))
    return families


def _hsv_to_rgb(hue, saturation, value):
    sector = int(hue * 6) % 6
    fraction = hue * 6 - int(hue * 6)
    p = value * (1 - saturation)
    q = value * (1 - fraction * saturation)
    t = value * (1 - (1 - fraction) * saturation)
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    return tuple(int(round(255 * c)) for c in rgb[sector])


def _level_color(color, level):
    """The family colour at a rarity level: 0 itself, then per LEVEL_COLOR_MIX (towards white
    for a positive mix, towards black for a negative one), cycling for deeper levels."""
    if level == 0:
        return tuple(color)
    mix = LEVEL_COLOR_MIX[(level - 1) % len(LEVEL_COLOR_MIX)]
    target = 255.0 if mix > 0 else 0.0
    return tuple(int(round(c + (target - c) * abs(mix))) for c in color)


def build_classes(num_classes: int) -> List[SyntheticClass]:
    """The classes in rank order: head classes are the families' plain colours; the other
    classes go round-robin over the families, each with a texture. The texture order is rotated
    per family, so a texture alone does not tell how rare a class is."""
    num_families = num_head_classes(num_classes)
    num_body = math.ceil((num_classes - num_families) / 2)
    families = _family_colors(num_families)
    classes = []
    for index in range(num_classes):
        family = index % num_families
        level = index // num_families  # 0 = plain head class, 1.. = textured members
        if level == 0:
            texture, group = PLAIN, "head"
        else:
            texture = TEXTURES[(level - 1 + family) % len(TEXTURES)]
            group = "body" if index < num_families + num_body else "tail"
        family_name, family_color = families[family]
        # Each rarity level changes the family colour its own way (lighter, darker, much lighter):
        # a cue a small network learns, near enough to the neighbouring level (under the jitter
        # and brightness noise) that a frequency-biased classifier absorbs the rarer class.
        base = _level_color(family_color, level)
        shade = 1.0 - 0.15 * level
        display = tuple(int(round(c * shade)) for c in base)
        classes.append(
            SyntheticClass(index, f"{family_name} {texture}", family_name, texture, group, base,
                           display)
        )
    return classes


def min_images_per_split(num_classes: int) -> int:
    """Fewest images per split that hold every class: two cells for each head class in val,
    and every LVIS category in an image of its own crowd (about four per image)."""
    return max(num_head_classes(num_classes), math.ceil(num_classes / 4))


def _log_spaced(first: float, last: float, count: int) -> np.ndarray:
    if count == 1:
        return np.array([math.sqrt(first * last)])
    return np.exp(np.linspace(math.log(first), math.log(last), count))


def semantic_schedule(classes: Sequence[SyntheticClass]):
    """Head-cell weights, and per object class its target share of a split's pixels and its
    nominal object diameter (fraction of the image side); both fall with the class rank."""
    heads = [c for c in classes if c.group == "head"]
    objects = [c for c in classes if c.group != "head"]
    num_body = sum(c.group == "body" for c in objects)
    head_weights = _log_spaced(1.0, HEAD_LAST_WEIGHT, len(heads))
    shares = np.concatenate(
        [_log_spaced(*BODY_SHARES, num_body), _log_spaced(*TAIL_SHARES, len(objects) - num_body)]
    )
    diameters = _log_spaced(*OBJECT_DIAMETERS, len(objects))
    return head_weights / head_weights.sum(), shares, diameters


def lvis_image_fractions(classes: Sequence[SyntheticClass]) -> np.ndarray:
    """Per category, the share of a split's images that contain it.

    Scaled down when there are so many categories that an image would hold more than
    ``LVIS_MAX_CATEGORIES_PER_IMAGE`` of them on average (not the case at 19).
    """
    num_heads = sum(c.group == "head" for c in classes)
    fractions = np.concatenate(
        [
            _log_spaced(*LVIS_HEAD_IMAGE_FRACTIONS, num_heads),
            _log_spaced(*LVIS_REST_IMAGE_FRACTIONS, len(classes) - num_heads),
        ]
    )
    return fractions * min(1.0, LVIS_MAX_CATEGORIES_PER_IMAGE / fractions.sum())


def lvis_frequency(image_count: int) -> str:
    """LVIS's frequency group from the number of training images: r 1-10, c 11-100, f > 100."""
    if image_count <= LVIS_RARE_MAX_IMAGES:
        return "r"
    if image_count <= LVIS_COMMON_MAX_IMAGES:
        return "c"
    return "f"


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int):
    ys, xs = np.mgrid[0:size, 0:size]
    return ys, xs


def _texture_pattern(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean map of the texture's dark pixels, at a random phase."""
    ys, xs = _pixel_grid(size)
    offset_y, offset_x = rng.integers(0, 20, size=2)  # drawn for every texture: stable streams
    y, x = ys + offset_y, xs + offset_x
    if texture == PLAIN:
        return np.zeros((size, size), dtype=bool)
    if texture == "h-striped":
        return (y // 2) % 2 == 1
    if texture == "v-striped":
        return (x // 2) % 2 == 1
    if texture == "d-striped":
        return ((x + y) // 2) % 2 == 1
    if texture == "checkered":
        return (x // 2 + y // 2) % 2 == 1
    if texture == "dotted":
        return (x % 5 < 2) & (y % 5 < 2)
    if texture == "grid":
        return (x % 4 == 0) | (y % 4 == 0)
    raise ValueError(f"unknown texture {texture!r}")


def _paint(image: np.ndarray, mask: np.ndarray, cls: SyntheticClass, rng: np.random.Generator):
    """Fill ``mask`` of a float RGB image with the class's appearance (jittered colour, texture)."""
    color = np.asarray(cls.base_color, dtype=np.float32) + rng.uniform(
        -REGION_JITTER, REGION_JITTER, size=3
    ).astype(np.float32)
    dark = _texture_pattern(cls.texture, image.shape[0], rng)[mask]
    image[mask] = np.where(dark[:, None], color * TEXTURE_DARKEN, color)


def _finish_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting and per-pixel noise, then to uint8."""
    image = image * rng.uniform(*BRIGHTNESS_RANGE)
    image = image + rng.normal(0.0, PIXEL_NOISE_SIGMA, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _random_polygon(rng: np.random.Generator, diameter: float) -> np.ndarray:
    """A shape (ellipse, rectangle, triangle or blob) of about ``diameter``, centred at 0."""
    radius = diameter / 2
    kind = rng.integers(4)
    aspect = rng.uniform(0.6, 1.0)
    if kind == 0:  # ellipse
        angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        points = np.stack([radius * np.cos(angles), radius * aspect * np.sin(angles)], axis=1)
    elif kind == 1:  # rectangle, a bit smaller so that its area is close to the ellipse's
        half_w, half_h = 0.85 * radius, 0.85 * radius * aspect
        points = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h],
                           [-half_w, half_h]])
    elif kind == 2:  # triangle, a bit larger for the same reason
        angles = np.pi / 2 + np.array([0, 2, 4]) * np.pi / 3
        points = 1.2 * radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:  # blob: a 12-gon with jittered radii
        angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        radii = radius * rng.uniform(0.7, 1.1, size=12)
        points = np.stack([radii * np.cos(angles), radii * aspect * np.sin(angles)], axis=1)
    rotation = rng.uniform(0, np.pi)
    cos, sin = np.cos(rotation), np.sin(rotation)
    return points @ np.array([[cos, sin], [-sin, cos]])


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _random_position(points: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The polygon translated to a random place where it lies wholly inside the image."""
    low = -points.min(axis=0)
    high = size - points.max(axis=0)
    center = rng.uniform(np.minimum(low, high), np.maximum(low, high))
    return np.round(points + center, 2)


def _bbox_of(points: np.ndarray) -> Tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return x0, y0, x1, y1


def _boxes_overlap(a, b, margin=1.5) -> bool:
    return not (a[2] + margin < b[0] or b[2] + margin < a[0] or
                a[3] + margin < b[1] or b[3] + margin < a[1])


def _rasterise(points: np.ndarray, size: int):
    """Pixel mask and COCO RLE of a polygon, rasterised by pycocotools (as LVIS's tools do)."""
    rle = mask_util.merge(mask_util.frPyObjects([points.ravel().tolist()], size, size))
    with warnings.catch_warnings():
        # pycocotools' decode trips numpy 2's copy-keyword deprecation; the result is unaffected.
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = mask_util.decode(rle)
    return mask.astype(bool), rle


def _outer_ring(mask: np.ndarray) -> np.ndarray:
    """Pixels 4-adjacent to ``mask`` but outside it."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown & ~mask


# ---------------------------------------------------------------------------------------------
# Semantic set
# ---------------------------------------------------------------------------------------------


@dataclass
class _SemanticObject:
    cls: SyntheticClass
    shape: np.ndarray  # polygon centred at 0
    outlined: bool


@dataclass
class _SemanticImagePlan:
    cell_classes: List[SyntheticClass]
    objects: List[_SemanticObject]


def _plan_semantic_split(classes, num_images, size, rng, split) -> List[_SemanticImagePlan]:
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
            shape = _random_polygon(rng, nominal * rng.uniform(0.8, 1.2))
            outlined = bool(rng.random() < OUTLINE_PROBABILITY)
            plans[rng.integers(num_images)].objects.append(_SemanticObject(cls, shape, outlined))
            placed += _polygon_area(shape)
            count += 1
    for plan in plans:
        # Frequent classes first, so the rarer (smaller) objects are never hidden under them.
        plan.objects.sort(key=lambda o: o.cls.index)
    return plans


def _render_semantic_image(plan: _SemanticImagePlan, size: int, rng: np.random.Generator):
    """RGB image and label map of one planned image."""
    ys, xs = _pixel_grid(size)
    seeds = rng.uniform(0, size, size=(len(plan.cell_classes), 2))
    seed_y, seed_x = seeds[:, 0, None, None], seeds[:, 1, None, None]
    cell_of_pixel = ((ys[None] - seed_y) ** 2 + (xs[None] - seed_x) ** 2).argmin(axis=0)

    image = np.zeros((size, size, 3), dtype=np.float32)
    label = np.zeros((size, size), dtype=np.uint8)
    for cell, cls in enumerate(plan.cell_classes):
        mask = cell_of_pixel == cell
        _paint(image, mask, cls, rng)
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
            points = _random_position(obj.shape, size, rng)
            box = _bbox_of(points)
            if not any(_boxes_overlap(box, other) for other in placed_boxes):
                break
        placed_boxes.append(box)
        mask, _ = _rasterise(points, size)
        _paint(image, mask, obj.cls, rng)
        label[mask] = obj.cls.index
        covered |= mask
        if obj.outlined:
            label[_outer_ring(mask) & ~covered] = IGNORE_LABEL
    label[boundary & ~covered] = IGNORE_LABEL
    return _finish_image(image, rng), label


def _cityscapes_label_ids(num_classes: int) -> np.ndarray:
    """Lookup table trainId -> Cityscapes labelId; identity unless there are 19 classes."""
    table = np.arange(256, dtype=np.uint8)
    if num_classes == 19:
        from cityscapesscripts.helpers.labels import trainId2label

        for train_id in range(19):
            table[train_id] = trainId2label[train_id].id
        table[IGNORE_LABEL] = 0  # "unlabeled"
    return table


def _write_semantic_split(staging, split, plans, size, label_id_table, rng, progress_bar):
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
        _save_jpeg(os.path.join(ade_images, ade_stem + ".jpg"), image)
        _save_png(os.path.join(ade_labels, ade_stem + ".png"), label)

        city_stem = f"{city}_000000_{index:06d}"
        _save_png(os.path.join(city_images, city_stem + "_leftImg8bit.png"), image)
        gt = os.path.join(city_labels, city_stem + "_gtFine_")
        _save_png(gt + "labelTrainIds.png", label)
        _save_png(gt + "labelIds.png", label_id_table[label])
        # Cityscapes instanceIds are 16-bit; with no instance ids they equal the labelIds.
        _save_png(gt + "instanceIds.png", label_id_table[label].astype(np.uint16))
        _write_json(gt + "polygons.json", polygons)
        if progress_bar is not None:
            progress_bar.update(1)
    return pixel_counts


# ---------------------------------------------------------------------------------------------
# LVIS set
# ---------------------------------------------------------------------------------------------


def _plan_lvis_split(classes, num_images, rng) -> List[List[SyntheticClass]]:
    """Per image, the categories of its instances (one entry per instance), in placing order.

    Each category goes into a fixed number of images, so its image count, and with it its LVIS
    frequency group, is set by the schedule rather than by chance. The images are the least
    crowded so far (ties broken at random), which keeps every image from overflowing.
    """
    fractions = lvis_image_fractions(classes)
    plans = [[] for _ in range(num_images)]
    for cls, fraction in zip(classes, fractions):
        num_with = int(np.clip(round(fraction * num_images), 1, num_images))
        extra_mean = LVIS_EXTRA_INSTANCES[cls.group]
        shuffled = rng.permutation(num_images)
        least_crowded = sorted(shuffled, key=lambda i: len(plans[i]))[:num_with]
        for image_index in sorted(least_crowded):
            copies = 1 + min(rng.poisson(extra_mean), LVIS_MAX_INSTANCES_PER_CATEGORY - 1)
            plans[image_index].extend((copy, cls) for copy in range(copies))
    # First copies before extra ones, rarest first: if an image runs out of room, what is dropped
    # is an extra copy of a frequent category, which keeps the image counts on schedule.
    return [[cls for _, cls in sorted(plan, key=lambda p: (p[0], -p[1].index))] for plan in plans]


def _render_lvis_image(plan, classes, size, rng):
    """RGB image and the instances (category index, polygon, RLE) placed in it."""
    diameters = _log_spaced(*LVIS_DIAMETERS, len(classes))
    ys, xs = _pixel_grid(size)
    grey = rng.uniform(*LVIS_BACKGROUND_GREY)
    slope = rng.uniform(-15, 15, size=2) / size  # a soft lighting gradient
    background = grey + slope[0] * (ys - size / 2) + slope[1] * (xs - size / 2)
    image = np.repeat(background[..., None], 3, axis=2).astype(np.float32)
    image += rng.uniform(-6, 6, size=3).astype(np.float32)  # slight colour cast, still neutral

    instances = []
    placed_boxes = []
    for cls in plan:
        diameter = max(diameters[cls.index] * size * rng.uniform(0.75, 1.25), MIN_OBJECT_DIAMETER)
        shape = _random_polygon(rng, diameter)
        points = None
        # Instances never overlap, so each polygon is exactly its visible mask.
        for attempt in range(3 * PLACEMENT_TRIES):
            if attempt and attempt % PLACEMENT_TRIES == 0:
                shape = shape * 0.8
            candidate = _random_position(shape, size, rng)
            box = _bbox_of(candidate)
            if not any(_boxes_overlap(box, other) for other in placed_boxes):
                points = candidate
                break
        if points is None:
            continue
        mask, rle = _rasterise(points, size)
        if not mask.any():
            continue
        placed_boxes.append(box)
        _paint(image, mask, cls, rng)
        instances.append((cls, points, rle))
    return _finish_image(image, rng), instances


def _lvis_image_id(split: str, index: int) -> int:
    # Val ids start far above any train id so the two splits never share an id.
    return index + 1 if split == "train" else 1_000_001 + index


def _write_lvis_split(staging, split, plans, classes, size, rng, progress_bar):
    """Render a split's images into coco/<split>2017/ and return its LVIS images/annotations."""
    coco_split = f"{split}2017"
    image_folder = os.path.join(staging, COCO_FOLDER, coco_split)
    os.makedirs(image_folder)
    all_categories = {cls.index + 1 for cls in classes}
    images, annotations = [], []
    for index, plan in enumerate(plans):
        image, instances = _render_lvis_image(plan, classes, size, rng)
        image_id = _lvis_image_id(split, index)
        file_name = f"{image_id:012d}.jpg"
        _save_jpeg(os.path.join(image_folder, file_name), image)
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


def _lvis_counts(annotations, num_classes):
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


def _lvis_categories(classes, image_counts, instance_counts):
    categories = []
    for cls in classes:
        synset_word = cls.name.replace(" ", "_").replace("-", "_")
        categories.append(
            {
                "id": cls.index + 1,
                "name": cls.name,
                "synset": f"{synset_word}.n.01",
                "synonyms": [cls.name],
                "def": cls.description,
                "frequency": lvis_frequency(int(image_counts[cls.index])),
                "image_count": int(image_counts[cls.index]),
                "instance_count": int(instance_counts[cls.index]),
            }
        )
    return categories


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _save_png(path: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def _save_jpeg(path: str, rgb: np.ndarray) -> None:
    # 4:4:4 chroma: keeps the colour of the smallest tail objects intact.
    Image.fromarray(rgb).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def _write_json(path: str, obj, indent=None) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent, separators=None if indent else (",", ":"))


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


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


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
        label_id_table = _cityscapes_label_ids(num_classes)
        for split, num_images in splits.items():
            rng = np.random.default_rng([seed, _STREAM_SEMANTIC, _SPLIT_CODES[split]])
            plans = _plan_semantic_split(classes, num_images, size, rng, split)
            semantic_counts[split] = _write_semantic_split(
                staging, split, plans, size, label_id_table, rng, progress_bar
            )

        lvis_splits = {}
        for split, num_images in splits.items():
            rng = np.random.default_rng([seed, _STREAM_LVIS, _SPLIT_CODES[split]])
            plans = _plan_lvis_split(classes, num_images, rng)
            lvis_splits[split] = _write_lvis_split(
                staging, split, plans, classes, size, rng, progress_bar
            )
        train_counts = _lvis_counts(lvis_splits["train"][1], num_classes)
        categories = _lvis_categories(classes, *train_counts)  # counts from TRAIN for both
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
            _write_json(os.path.join(staging, LVIS_FOLDER, f"lvis_v1_{split}.json"), lvis_json)

        names = [c.name for c in classes]
        colors = [list(c.display_color) for c in classes]
        _write_json(
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

    val_counts = _lvis_counts(lvis_splits["val"][1], num_classes)
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
