"""Atomic file output: write under a temporary name in the target folder, then rename, so a
reader (or a crash) never leaves a half-written file behind."""
import json
import os
import tempfile

import numpy as np


def write_text_atomically(text, path):
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    _write_atomically(path, lambda f: f.write(text))


def write_json_atomically(data, path, indent=1, allow_nan=True):
    _write_atomically(path, lambda f: json.dump(data, f, indent=indent, allow_nan=allow_nan))


def write_numpy_atomically(array, path):
    """Save ``array`` in numpy's ``.npy`` format (``np.load`` reads it) the same way."""
    _write_atomically(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False), mode="wb")


def _write_atomically(path, write, mode="w"):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
