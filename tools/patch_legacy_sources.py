#!/usr/bin/env python
"""Rewrite names that numpy and Pillow removed in installed Detectron2 v0.6, lvis 0.5.3 and
cityscapesscripts.

Detectron2 v0.6 (the only Detectron2 on the package registry) and ``lvis==0.5.3`` use ``np.int``,
``np.float``, ``np.bool``, ``np.str``, ``np.object`` and ``Image.LINEAR`` / ``CUBIC`` /
``ANTIALIAS``, which numpy 1.24 and Pillow 10 no longer have; cityscapesscripts 2.x's evaluation
(which Detectron2's Cityscapes evaluators call) uses ``np.in1d``, which numpy 2.4 removed. This
tool replaces them in the installed package files with the names they always meant (``int``,
``float``, ..., ``Image.BILINEAR``, ..., ``np.isin``), so nothing has to be patched at run time.
``np.in1d(a, b)`` is ``np.isin(a, b).ravel()``: ``isin`` keeps ``a``'s shape, and every call in
cityscapesscripts 2.3 reshapes the result to that shape. It is idempotent and leaves files
without those names untouched; ``tools/install_detectron2.sh`` runs it after installing.

    python tools/patch_legacy_sources.py                 # detectron2, lvis, cityscapesscripts
    python tools/patch_legacy_sources.py --folder DIR    # every .py file under DIR
"""
import argparse
import importlib.util
import os
import re
import sys

# np.int but not np.int32 / np.int_ / np.integer: the name must end there.
_NUMPY = re.compile(r"\bnp\.(int|float|bool|str|object)\b")
_PILLOW = {"LINEAR": "BILINEAR", "CUBIC": "BICUBIC", "ANTIALIAS": "LANCZOS"}
_PILLOW_RE = re.compile(r"\bImage\.(LINEAR|CUBIC|ANTIALIAS)\b")
_IN1D = re.compile(r"\bnp\.in1d\(")
PACKAGES = ("detectron2", "lvis", "cityscapesscripts")


def patch_source(text):
    """``text`` with the removed names replaced; (new text, number of replacements)."""
    text, numpy_count = _NUMPY.subn(lambda m: m.group(1), text)
    text, pillow_count = _PILLOW_RE.subn(lambda m: "Image." + _PILLOW[m.group(1)], text)
    text, in1d_count = _IN1D.subn("np.isin(", text)
    return text, numpy_count + pillow_count + in1d_count


def patch_folder(folder):
    """Patch every .py file under ``folder`` in place (temporary file + rename); returns
    {path: replacements} of the files changed."""
    changed = {}
    for parent, _, files in os.walk(folder):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(parent, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            patched, count = patch_source(text)
            if count:
                tmp = f"{path}.patching"
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(patched)
                os.replace(tmp, path)
                changed[path] = count
    return changed


def package_folder(name):
    """Folder of an installed package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return locations[0] if locations else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", action="append",
                        help="patch the .py files under this folder (repeatable); default: the "
                             "installed " + ", ".join(PACKAGES) + " packages")
    args = parser.parse_args(argv)
    folders = args.folder or [f for f in map(package_folder, PACKAGES) if f]
    for folder in folders:
        changed = patch_folder(folder)
        total = sum(changed.values())
        print(f"{folder}: {total} removed numpy/Pillow names replaced in {len(changed)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
