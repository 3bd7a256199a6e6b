"""Detectron2 v0.6 on today's numpy, Pillow and lvis.

The only Detectron2 on the package registry is v0.6 (``pb1-detectron2``), installed without its
C++ extension. Against numpy >= 1.24, Pillow >= 10 and ``lvis==0.5.3`` it breaks at import time
(``Image.LINEAR``; ``from detectron2 import _C``) and at run time (``np.int``, ``np.float``,
``np.bool``, ``np.str`` in the LVIS sampler, mask structures, the semantic-segmentation evaluator,
the visualizer and the LVIS evaluator). :func:`apply` restores those names and, when the compiled
``detectron2._C`` is absent, registers a placeholder whose operators raise a clear error.

Every step first checks that the installed code needs it (the old names appear in the installed
Detectron2 / lvis sources, the compiled extension is absent), so on a complete, modern Detectron2
this module is a no-op. It must run before Detectron2 is imported:
``import longtailseg`` calls it first.
"""
import importlib.util
import os
import sys
import types

MISSING_C_OPS_MESSAGE = (
    "this Detectron2 was built without its C++ ops: deformable convolution, rotated boxes and the "
    "fast COCO evaluator are unavailable"
)

# numpy aliases removed in numpy 1.24, with the builtins they always meant.
_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "str": str, "object": object}
# Pillow resampling constants removed in Pillow 10, with their current names.
_PILLOW_ALIASES = {"LINEAR": "BILINEAR", "CUBIC": "BICUBIC", "ANTIALIAS": "LANCZOS"}


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


def _detectron2_has_compiled_ops():
    """True when the installed detectron2 package ships its compiled ``_C`` extension.

    Looks at the files only, so that detectron2 is not imported before the patches are applied.
    """
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return True  # no detectron2 at all: nothing to stand in for
    for folder in spec.submodule_search_locations:
        for entry in os.listdir(folder):
            if entry.startswith("_C.") or entry == "_C":
                return True
    return False


def _package_file(package, relative_path):
    """Path of a file inside an installed package, found without importing it (or None)."""
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, relative_path)
        if os.path.isfile(path):
            return path
    return None


def _source_uses(package, relative_path, needle):
    path = _package_file(package, relative_path)
    if path is None:
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        return needle in f.read()


def _needs_removed_names():
    """Detectron2 v0.6 (``Image.LINEAR``) or lvis 0.5.3 (``np.float``) is installed."""
    return _source_uses("detectron2", os.path.join("data", "transforms", "transform.py"), "Image.LINEAR") or _source_uses("lvis", "eval.py", "np.float")


def apply():
    """Apply the compatibility patches that this environment needs; return their names."""
    applied = []
    if _needs_removed_names():
        applied += _restore_removed_names()
    if "detectron2._C" not in sys.modules and not _detectron2_has_compiled_ops():
        sys.modules["detectron2._C"] = _MissingCOps("detectron2._C")
        applied.append("detectron2._C")
    return applied


def _restore_removed_names():
    applied = []
    import numpy as np

    for name, builtin in _NUMPY_ALIASES.items():
        # vars(), not getattr(): numpy 2 warns on the mere lookup of some removed names.
        if name not in vars(np):
            setattr(np, name, builtin)
            applied.append(f"numpy.{name}")

    from PIL import Image

    for old, new in _PILLOW_ALIASES.items():
        if not hasattr(Image, old) and hasattr(Image, new):
            setattr(Image, old, getattr(Image, new))
            applied.append(f"PIL.Image.{old}")
    return applied


APPLIED = apply()
