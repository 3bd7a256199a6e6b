"""Label files read one way everywhere (class counting, the pre-flight, the training mapper, the
evaluator) and the checks of their values shared by all of them."""
import numpy as np
from PIL import Image, UnidentifiedImageError

from detectron2.utils.file_io import PathManager

from ..errors import DatasetError

# Pillow modes whose pixels are class ids: 8-bit grey, palette (its indices, not its colours),
# 16- and 32-bit integers.
LABEL_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")
_KINDS = {"RGB": "an RGB", "RGBA": "an RGBA", "LA": "a grey + alpha", "PA": "a palette + alpha",
          "CMYK": "a CMYK", "1": "a 1-bit", "F": "a floating-point"}
_CONVERT = ("convert the labels with the dataset's datasets/prepare_*.py script "
            "(one channel of class ids 0..C-1, 255 ignore)")


def read_label(path: str) -> np.ndarray:
    """The HxW class ids of a label file. A palette PNG gives its indices (what it stores;
    Detectron2's mapper would read the palette's grey levels instead, and counting the indices),
    so counting, checking, training and evaluation all see the same values; a colour or
    otherwise unreadable file is a one-line DatasetError naming it."""
    try:
        with PathManager.open(path, "rb") as f, Image.open(f) as image:
            mode = image.mode
            if mode not in LABEL_MODES:
                kind = _KINDS.get(mode, f"a Pillow mode {mode!r}")
                raise DatasetError(
                    f"label file {path} is {kind} image, not a single-channel PNG of class ids; {_CONVERT}")
            return np.asarray(image)
    except FileNotFoundError:
        raise DatasetError(f"label file {path} does not exist; restore it or remove its image "
                           "from the dataset (datasets/README.md)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        reason = ("not an image format Pillow reads" if isinstance(e, UnidentifiedImageError)
                  else str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise DatasetError(f"label file {path} cannot be read ({reason}: truncated or not a PNG); "
                           "replace the file") from None


def check_label_values(label: np.ndarray, num_classes: int, ignore_label: int, path: str) -> None:
    """Refuse labels outside ``[0, num_classes) ∪ {ignore_label}``, naming the file and the fix."""
    if label.dtype == np.uint8:  # bincount is several times faster than unique on PNG labels
        values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    else:
        values = np.unique(label)
    _refuse_values(values, num_classes, ignore_label, path)


def check_label_file(path: str, num_classes: int, ignore_label: int) -> None:
    """:func:`read_label` and :func:`check_label_values` of one file (the pre-flight's job)."""
    check_label_values(read_label(path), num_classes, ignore_label, path)


def check_label_histogram(histogram: np.ndarray, num_classes: int, ignore_label: int, path: str) -> None:
    """The same check from the label's histogram (``histogram[v]`` = pixels of value v), for a
    caller that builds it anyway (the class counter)."""
    _refuse_values(np.flatnonzero(histogram), num_classes, ignore_label, path)


def _refuse_values(values: np.ndarray, num_classes: int, ignore_label: int, path: str) -> None:
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        where = f">= num_classes {num_classes}" if bad.min() >= 0 else f"outside 0..{num_classes - 1}"
        raise DatasetError(
            f"label file {path} has values [{shown}] {where} "
            f"(other than ignore {ignore_label}); convert the labels with the dataset's "
            "datasets/prepare_*.py script (0..C-1 classes, 255 ignore) or fix "
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
        )
