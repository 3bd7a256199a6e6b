"""LongTailSeg: long-tailed segmentation methods as Detectron2 components.

Importing the package checks the installed Detectron2 (``_compat``: one line naming the fix when
it cannot work), then imports the modules whose decorators register datasets, heads and
evaluators in Detectron2's registries. Training lives in ``longtailseg.engine`` (``Trainer``,
``build_model``), imported on use.
"""
from . import _compat  # noqa: F401  (checks the installed Detectron2; any import order works)
from .config import add_longtailseg_config  # noqa: F401
from . import data  # noqa: F401  (registers the synthetic and real datasets)
from . import modeling  # noqa: F401  (registers heads)
from . import evaluation  # noqa: F401

__version__ = "0.1.0"
