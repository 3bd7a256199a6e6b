"""Atomic file output: write under a temporary name in the target folder, then rename, so a
reader (or a crash) never leaves a half-written file behind; the data reaches the disk before the
rename (fsync), so a power loss or a machine crash cannot leave a renamed but empty file.
A process killed mid-write leaves its temporary file; ``remove_leftovers`` removes such files when
the next run starts in that folder."""
import contextlib
import json
import logging
import os
import re
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
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)  # and the rename too


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # a file system that cannot sync a folder (EINVAL): the rename is all it offers
        pass
    finally:
        os.close(fd)


# Names of what an interrupted writer leaves: write_atomically's ".<name>.<8 characters>.tmp", the
# "<name>.tmp<pid>" of a copy (class statistics) and OUTPUT_DIR's ".write-test.<8 characters>" probe.
_LEFTOVER = re.compile(r"^(\..+\.[a-z0-9_]{8}\.tmp|.+\.tmp\d+|\.write-test\.[a-z0-9_]{8})$")


def remove_leftovers(folder, depth=2):
    """Remove the temporary files interrupted writers left in ``folder`` and its sub-folders down to
    ``depth`` levels (``inference/<dataset>``), log them and return their paths. Call it only where
    no other process writes: the run that holds the folder, before it writes."""
    removed = []
    for path in list(_leftovers(folder, depth)):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed.append(path)
    if removed:
        logging.getLogger("longtailseg").warning(
            f"removed {len(removed)} temporary files that an interrupted run left in {folder}: "
            + ", ".join(os.path.relpath(p, folder) for p in removed))
    return removed


def _leftovers(folder, depth):
    if not os.path.isdir(folder):
        return
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False) and depth > 0:
            yield from _leftovers(entry.path, depth - 1)
        elif entry.is_file(follow_symlinks=False) and _LEFTOVER.match(entry.name):
            yield entry.path


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
