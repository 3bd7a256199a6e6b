"""Atomic file output: write under a temporary name in the target folder, then rename, so a
reader (or a crash) never leaves a half-written file behind."""
import json
import os
import tempfile

import numpy as np


def write_text_atomically(text, path):
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    write_atomically(path, lambda f: f.write(text))


def write_json_atomically(data, path, indent=1, allow_nan=True):
    write_atomically(path, lambda f: json.dump(data, f, indent=indent, allow_nan=allow_nan))


def write_bytes_atomically(data, path):
    """Write the bytes ``data`` (e.g. an encoded PNG) to ``path`` through a temporary file."""
    write_atomically(path, lambda f: f.write(data), binary=True)


def write_numpy_atomically(array, path):
    """Save ``array`` in numpy's ``.npy`` format (``np.load`` reads it) the same way."""
    write_atomically(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False), binary=True)


def write_atomically(path, write, binary=False):
    """Call ``write(file)`` on a temporary file in ``path``'s folder, then rename it to ``path``.
    The file gets the mode a plain ``open`` would give (0644 under the usual umask), not the
    owner-only 0600 of a temporary file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
