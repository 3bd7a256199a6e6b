#!/usr/bin/env python
"""Make the installed Detectron2 v0.6 work by itself on today's numpy and Pillow: rewrite the names
they removed, and install a placeholder for its missing C++ ops.

Detectron2 v0.6 (the only Detectron2 on the package registry) and ``lvis==0.5.3`` use ``np.int``,
``np.float``, ``np.bool``, ``np.str``, ``np.object`` and ``Image.LINEAR`` / ``CUBIC`` /
``ANTIALIAS``, which numpy 1.24 and Pillow 10 no longer have; cityscapesscripts 2.x's evaluation
(which Detectron2's Cityscapes evaluators call) uses ``np.in1d``, which numpy 2.4 removed. This
tool replaces them in the installed package files with the names they always meant (``int``,
``float``, ..., ``Image.BILINEAR``, ..., ``np.isin``), so nothing has to be patched at run time.
``np.in1d(a, b)`` is ``np.isin(a, b).ravel()``: ``isin`` keeps ``a``'s shape, and every call in
cityscapesscripts 2.3 reshapes the result to that shape.

``tools/install_detectron2.sh`` installs v0.6 without its compiled ``detectron2._C``, which
``detectron2.engine``, ``detectron2.evaluation`` and ``detectron2.layers`` import. So that
Detectron2 and its own tools import without LongTailSeg, this tool writes ``detectron2/_C.py``
(:data:`C_PLACEHOLDER`): importable, every operator raises a one-line RuntimeError, and the
build-information functions ``collect_env`` reads answer truthfully. It is listed in the
distribution's RECORD, so ``pip uninstall`` removes it with Detectron2. A folder with a compiled
``_C`` (Detectron2 built from source) is left alone. ``import longtailseg`` only checks that one
of the two is there (``longtailseg/_compat.py``).

Both steps are idempotent (files without those names are left untouched);
``tools/install_detectron2.sh`` (``make setup``) runs the tool after installing.

    python tools/patch_legacy_sources.py                 # detectron2, lvis, cityscapesscripts
    python tools/patch_legacy_sources.py --folder DIR    # every .py file under DIR (and the
                                                         # _C placeholder if DIR is a detectron2)
"""
import argparse
import glob
import importlib.machinery
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

# longtailseg/_compat.py recognises the placeholder by this line: keep the two in step.
C_PLACEHOLDER_MARKER = "# detectron2._C placeholder from LongTailSeg tools/patch_legacy_sources.py"
C_PLACEHOLDER = C_PLACEHOLDER_MARKER + '''
"""Stands in for Detectron2's compiled C++ ops, which this installation lacks (v0.6 from the
package registry, Python code only): importable, so the modules that import it load; every
operator raises a one-line RuntimeError; the build information collect_env reads is true."""

_UNAVAILABLE = (
    "detectron2._C.{} is unavailable: this Detectron2 was installed without its C++ ops "
    "(deformable convolution, rotated boxes, ROIAlignRotated, the fast COCO evaluator); for "
    "them install Detectron2 built from source: "
    "https://detectron2.readthedocs.io/en/latest/tutorials/install.html"
)


def get_compiler_version():
    return "none: Python-only Detectron2 without its C++ ops"


def get_cuda_version():
    return "none: Python-only Detectron2 without its C++ ops"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise RuntimeError(_UNAVAILABLE.format(name))
'''


def patch_source(text):
    """``text`` with the removed names replaced; (new text, number of replacements)."""
    text, numpy_count = _NUMPY.subn(lambda m: m.group(1), text)
    text, pillow_count = _PILLOW_RE.subn(lambda m: "Image." + _PILLOW[m.group(1)], text)
    text, in1d_count = _IN1D.subn("np.isin(", text)
    return text, numpy_count + pillow_count + in1d_count


def _write(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename (never half written)."""
    tmp = f"{path}.patching"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def patch_folder(folder):
    """Patch every .py file under ``folder`` in place; returns {path: replacements} of the files
    changed."""
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
                _write(path, patched)
                changed[path] = count
    return changed


def compiled_c_ops(folder):
    """The compiled ``_C`` extension files in a detectron2 package folder (empty when absent)."""
    return sorted(os.path.join(folder, "_C" + suffix)
                  for suffix in importlib.machinery.EXTENSION_SUFFIXES
                  if os.path.isfile(os.path.join(folder, "_C" + suffix)))


def install_c_placeholder(folder):
    """Write ``folder/_C.py`` (:data:`C_PLACEHOLDER`) unless the compiled ops are there; returns
    "written", "up to date", "compiled" (nothing written) or "foreign" (a ``_C.py`` that is not
    this placeholder, left as it is)."""
    if compiled_c_ops(folder):
        return "compiled"
    path = os.path.join(folder, "_C.py")
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if text.split("\n", 1)[0] != C_PLACEHOLDER_MARKER:
            return "foreign"
        if text == C_PLACEHOLDER:
            _add_to_record(path)
            return "up to date"
    _write(path, C_PLACEHOLDER)  # new, or an older version of the placeholder
    _add_to_record(path)
    return "written"


def _add_to_record(path):
    """List ``path`` in the RECORD of the distribution that installed its package, so that
    ``pip uninstall`` removes it too (nothing when no installed distribution owns the package)."""
    package = os.path.dirname(path)
    site = os.path.dirname(package)
    init = f"{os.path.basename(package)}/__init__.py,"
    entry = os.path.relpath(path, site).replace(os.sep, "/") + ","
    for record in glob.glob(os.path.join(site, "*.dist-info", "RECORD")):
        with open(record, encoding="utf-8", newline="") as f:
            text = f.read()
        lines = text.splitlines()
        if any(line.startswith(init) for line in lines):
            if not any(line.startswith(entry) for line in lines):
                newline = "\r\n" if "\r\n" in text else "\n"  # pip writes RECORD with csv
                end = "" if not text or text.endswith(("\n", "\r")) else newline
                with open(record, "a", encoding="utf-8", newline="") as f:
                    f.write(f"{end}{entry},{newline}")
            return


def _is_detectron2(folder):
    return (os.path.basename(os.path.normpath(folder)) == "detectron2"
            and os.path.isfile(os.path.join(folder, "__init__.py")))


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
    status = 0
    for folder in folders:
        changed = patch_folder(folder)
        total = sum(changed.values())
        print(f"{folder}: {total} removed numpy/Pillow names replaced in {len(changed)} files")
        if not _is_detectron2(folder):
            continue
        path = os.path.join(folder, "_C.py")
        done = install_c_placeholder(folder)
        if done == "foreign":
            print(f"error: {path} is not LongTailSeg's placeholder for the C++ ops; remove it and "
                  "run this tool again", file=sys.stderr)
            status = 1
        elif done == "compiled":
            print(f"{folder}: compiled C++ ops {compiled_c_ops(folder)[0]} found, no placeholder")
        else:
            print(f"{path}: placeholder for the missing C++ ops {done}")
    return status


if __name__ == "__main__":
    sys.exit(main())
