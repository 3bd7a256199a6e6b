"""Atomic file output: write under a temporary name in the target folder, then rename, so a
reader (or a crash) never leaves a half-written file behind."""
import json
import os
import tempfile


def write_json_atomically(data, path, indent=1, allow_nan=True):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=indent, allow_nan=allow_nan)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
