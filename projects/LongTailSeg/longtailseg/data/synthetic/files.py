"""Writing the synthetic images, labels and json files."""
import json

from PIL import Image
import numpy as np


JPEG_QUALITY = 95


def save_png(path: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def save_jpeg(path: str, rgb: np.ndarray) -> None:
    # 4:4:4 chroma: keeps the colour of the smallest tail objects intact.
    Image.fromarray(rgb).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def write_json(path: str, obj, indent=None) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent, separators=None if indent else (",", ":"))
