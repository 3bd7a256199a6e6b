"""Drawing: textures, polygons, rasterisation and the finishing noise of the synthetic images."""
import functools
import warnings
from typing import Tuple

import numpy as np
import pycocotools.mask as mask_util

from .classes import (
    BRIGHTNESS_RANGE,
    PIXEL_NOISE_SIGMA,
    PLAIN,
    REGION_JITTER,
    SyntheticClass,
    TEXTURE_DARKEN,
)


@functools.lru_cache(maxsize=8)
def pixel_grid(size: int):
    ys, xs = np.mgrid[0:size, 0:size]
    return ys, xs


def _texture_pattern(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean map of the texture's dark pixels, at a random phase."""
    ys, xs = pixel_grid(size)
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


def paint(image: np.ndarray, mask: np.ndarray, cls: SyntheticClass, rng: np.random.Generator):
    """Fill ``mask`` of a float RGB image with the class's appearance (jittered colour, texture)."""
    color = np.asarray(cls.base_color, dtype=np.float32) + rng.uniform(
        -REGION_JITTER, REGION_JITTER, size=3
    ).astype(np.float32)
    dark = _texture_pattern(cls.texture, image.shape[0], rng)[mask]
    image[mask] = np.where(dark[:, None], color * TEXTURE_DARKEN, color)


def finish_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting and per-pixel noise, then to uint8."""
    image = image * rng.uniform(*BRIGHTNESS_RANGE)
    image = image + rng.normal(0.0, PIXEL_NOISE_SIGMA, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def random_polygon(rng: np.random.Generator, diameter: float) -> np.ndarray:
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


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def random_position(points: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The polygon translated to a random place where it lies wholly inside the image."""
    low = -points.min(axis=0)
    high = size - points.max(axis=0)
    center = rng.uniform(np.minimum(low, high), np.maximum(low, high))
    return np.round(points + center, 2)


def bbox_of(points: np.ndarray) -> Tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return x0, y0, x1, y1


def boxes_overlap(a, b, margin=1.5) -> bool:
    return not (a[2] + margin < b[0] or b[2] + margin < a[0] or
                a[3] + margin < b[1] or b[3] + margin < a[1])


def rasterise(points: np.ndarray, size: int):
    """Pixel mask and COCO RLE of a polygon, rasterised by pycocotools (as LVIS's tools do)."""
    rle = mask_util.merge(mask_util.frPyObjects([points.ravel().tolist()], size, size))
    with warnings.catch_warnings():
        # pycocotools' decode trips numpy 2's copy-keyword deprecation; the result is unaffected.
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = mask_util.decode(rle)
    return mask.astype(bool), rle


def outer_ring(mask: np.ndarray) -> np.ndarray:
    """Pixels 4-adjacent to ``mask`` but outside it."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown & ~mask
