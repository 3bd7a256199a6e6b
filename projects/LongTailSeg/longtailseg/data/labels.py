"""Label checks shared by the class counter, the train mapper and the evaluator."""
import numpy as np

from ..errors import DatasetError


def check_label_values(label: np.ndarray, num_classes: int, ignore_label: int, path: str) -> None:
    """Refuse labels outside ``[0, num_classes) ∪ {ignore_label}``, naming the file and the fix."""
    if label.dtype == np.uint8:  # bincount is several times faster than unique on PNG labels
        values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    else:
        values = np.unique(label)
    _refuse_values(values, num_classes, ignore_label, path)


def check_label_histogram(histogram: np.ndarray, num_classes: int, ignore_label: int, path: str) -> None:
    """The same check from the label's histogram (``histogram[v]`` = pixels of value v), for a
    caller that builds it anyway (the class counter)."""
    _refuse_values(np.flatnonzero(histogram), num_classes, ignore_label, path)


def _refuse_values(values: np.ndarray, num_classes: int, ignore_label: int, path: str) -> None:
    bad = values[(values >= num_classes) & (values != ignore_label)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise DatasetError(
            f"label file {path} has values [{shown}] >= num_classes {num_classes} "
            f"(other than ignore {ignore_label}); convert the labels with the dataset's "
            "datasets/prepare_*.py script (0..C-1 classes, 255 ignore) or fix "
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
        )
