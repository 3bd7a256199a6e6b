"""Checks at ``import longtailseg`` that the installed Detectron2 works by itself; changes nothing.

The only Detectron2 on the package registry is v0.6 (``pb1-detectron2``), installed without its
C++ extension by ``tools/install_detectron2.sh``. ``tools/patch_legacy_sources.py`` (``make
setup`` runs both) rewrites its names that today's numpy and Pillow removed and writes
``detectron2/_C.py``, a placeholder for the missing compiled ``detectron2._C`` whose operators
raise a one-line error. So Detectron2 and its own tools import without LongTailSeg, and any import
order works. This module only refuses, with one ImportError line naming the fix, a Detectron2
that is missing, an unpatched v0.6, or one whose ``_C`` is neither compiled nor that placeholder.
It reads files, imports nothing of Detectron2, and passes a complete Detectron2 built from source.
"""
import importlib.machinery
import importlib.util
import os

# The first line of the placeholder that tools/patch_legacy_sources.py writes: keep the two in step.
C_PLACEHOLDER_MARKER = "# detectron2._C placeholder from LongTailSeg tools/patch_legacy_sources.py"
FIX = ("run `python tools/patch_legacy_sources.py` with this interpreter from the LongTailSeg "
       "checkout (`make setup` does this)")
INSTALL_HINT = (
    "install Detectron2 from its repository (https://github.com/facebookresearch/detectron2), or "
    "run `make setup` in the LongTailSeg checkout (tools/install_detectron2.sh installs v0.6)"
)


def _package_folders(package):
    """Folders of an installed regular package (one with ``__init__.py``), found without importing
    it; empty if absent (a folder left by an uninstall is a namespace package, not Detectron2)."""
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    return [f for f in folders if os.path.isfile(os.path.join(f, "__init__.py"))]


def _detectron2_has_compiled_ops(folders):
    """Whether a compiled ``_C`` extension (``_C.cpython-*.so``, ``_C.pyd``...) is installed; the
    ``_C.py`` placeholder is not one."""
    return any(os.path.isfile(os.path.join(folder, "_C" + suffix))
               for folder in folders for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _detectron2_has_c_placeholder(folders):
    """Whether ``_C.py`` is the placeholder that tools/patch_legacy_sources.py installs."""
    for folder in folders:
        path = os.path.join(folder, "_C.py")
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                if f.readline().rstrip("\n") == C_PLACEHOLDER_MARKER:
                    return True
    return False


def _unpatched_v06(folders):
    """The v0.6 file that still uses Pillow's removed ``Image.LINEAR`` (None when patched)."""
    for folder in folders:
        path = os.path.join(folder, "data", "transforms", "transform.py")
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                if "Image.LINEAR" in f.read():
                    return path
    return None


def check():
    """How Detectron2's C++ ops are provided: "compiled" or "placeholder". Raises a one-line
    ImportError when Detectron2 is absent, an unpatched v0.6, or has neither."""
    folders = _package_folders("detectron2")
    if not folders:
        raise ImportError(f"LongTailSeg needs Detectron2, which is not installed; {INSTALL_HINT}")
    unpatched = _unpatched_v06(folders)
    if unpatched:
        raise ImportError(
            f"{unpatched} still uses names that Pillow 10 and numpy 1.24 removed (Detectron2 v0.6 "
            f"as published); {FIX}"
        )
    if _detectron2_has_compiled_ops(folders):
        return "compiled"
    if _detectron2_has_c_placeholder(folders):
        return "placeholder"
    raise ImportError(
        f"{os.path.join(folders[0], '_C.py')} is missing or not LongTailSeg's placeholder, and "
        f"this Detectron2 has no compiled C++ ops (detectron2._C) either; {FIX}"
    )


C_OPS = check()
