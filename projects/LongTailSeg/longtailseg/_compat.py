"""What an incomplete Detectron2 needs at run time, and nothing on a complete one.

The only Detectron2 on the package registry is v0.6 (``pb1-detectron2``), installed without its
C++ extension. Its uses of names that today's numpy and Pillow removed are rewritten in the
installed files by ``tools/patch_legacy_sources.py`` (``make setup`` runs it); what cannot be
written into files is the missing compiled ``detectron2._C``: :func:`apply` registers a
placeholder whose operators raise a clear error, so the modules that import it still load.

Both steps look at the installed files first, so on a complete, modern Detectron2 this module does
nothing. It runs before Detectron2 is imported: ``import longtailseg`` calls it first.
"""
import importlib.util
import os
import sys
import types

MISSING_C_OPS_MESSAGE = (
    "this Detectron2 was built without its C++ ops: deformable convolution, rotated boxes and the "
    "fast COCO evaluator are unavailable"
)
INSTALL_HINT = (
    "install Detectron2 from its repository (https://github.com/facebookresearch/detectron2), or "
    "run `make setup` in the LongTailSeg checkout (tools/install_detectron2.sh builds v0.6)"
)


class _MissingCOps(types.ModuleType):
    """Placeholder for ``detectron2._C``: importable, but every operator raises.

    The build-information functions that ``detectron2.utils.collect_env`` (called by
    ``default_setup``) reads answer truthfully instead of raising.
    """

    __file__ = None

    @staticmethod
    def get_compiler_version():
        return "none: Python-only build without C++ ops"

    @staticmethod
    def get_cuda_version():
        return "none: Python-only build without C++ ops"

    @staticmethod
    def has_cuda():
        return False

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"{MISSING_C_OPS_MESSAGE} (detectron2._C.{name} was called)")


def _package_folders(package):
    """Folders of an installed package, found without importing it (empty if absent)."""
    spec = importlib.util.find_spec(package)
    return list(spec.submodule_search_locations or []) if spec else []


def _detectron2_has_compiled_ops(folders):
    return any(entry.startswith("_C.") or entry == "_C"
               for folder in folders for entry in os.listdir(folder))


def _unpatched_v06(folders):
    """The v0.6 file that still uses Pillow's removed ``Image.LINEAR`` (None when patched)."""
    for folder in folders:
        path = os.path.join(folder, "data", "transforms", "transform.py")
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                if "Image.LINEAR" in f.read():
                    return path
    return None


def apply():
    """Register the ``detectron2._C`` placeholder where the compiled ops are missing; returns the
    names of what was done. Raises ImportError when Detectron2 is absent or is an unpatched v0.6."""
    folders = _package_folders("detectron2")
    if not folders:
        raise ImportError(f"LongTailSeg needs Detectron2, which is not installed; {INSTALL_HINT}")
    unpatched = _unpatched_v06(folders)
    if unpatched:
        raise ImportError(
            f"{unpatched} still uses names that Pillow 10 and numpy 1.24 removed (Detectron2 v0.6 "
            "as published); rewrite them with `python tools/patch_legacy_sources.py` from the "
            "LongTailSeg checkout (make setup does this)"
        )
    if "detectron2._C" in sys.modules or _detectron2_has_compiled_ops(folders):
        return []
    sys.modules["detectron2._C"] = _MissingCOps("detectron2._C")
    return ["detectron2._C"]


APPLIED = apply()
