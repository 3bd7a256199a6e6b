"""The synthetic classes and their long-tail schedules: colour families, textures, names, and how
often each class appears (pixel shares of the semantic set, image shares of the LVIS set)."""
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np


IGNORE_LABEL = 255
MIN_NUM_CLASSES = 6
MAX_NUM_CLASSES = 150  # ADE20K's size; beyond it the colour families get hard to tell apart
MIN_SIZE = 32
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
STREAM_SEMANTIC = 1
STREAM_LVIS = 2
SPLIT_CODES = {"train": 0, "val": 1}


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


def log_spaced(first: float, last: float, count: int) -> np.ndarray:
    if count == 1:
        return np.array([math.sqrt(first * last)])
    return np.exp(np.linspace(math.log(first), math.log(last), count))


def semantic_schedule(classes: Sequence[SyntheticClass]):
    """Head-cell weights, and per object class its target share of a split's pixels and its
    nominal object diameter (fraction of the image side); both fall with the class rank."""
    heads = [c for c in classes if c.group == "head"]
    objects = [c for c in classes if c.group != "head"]
    num_body = sum(c.group == "body" for c in objects)
    head_weights = log_spaced(1.0, HEAD_LAST_WEIGHT, len(heads))
    shares = np.concatenate(
        [log_spaced(*BODY_SHARES, num_body), log_spaced(*TAIL_SHARES, len(objects) - num_body)]
    )
    diameters = log_spaced(*OBJECT_DIAMETERS, len(objects))
    return head_weights / head_weights.sum(), shares, diameters


def lvis_image_fractions(classes: Sequence[SyntheticClass]) -> np.ndarray:
    """Per category, the share of a split's images that contain it.

    Scaled down when there are so many categories that an image would hold more than
    ``LVIS_MAX_CATEGORIES_PER_IMAGE`` of them on average (not the case at 19).
    """
    num_heads = sum(c.group == "head" for c in classes)
    fractions = np.concatenate(
        [
            log_spaced(*LVIS_HEAD_IMAGE_FRACTIONS, num_heads),
            log_spaced(*LVIS_REST_IMAGE_FRACTIONS, len(classes) - num_heads),
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
