"""LongTailSeg: long-tailed segmentation methods as Detectron2 components.

Importing the package first makes Detectron2 v0.6 work on today's numpy / Pillow / lvis
(see ``_compat``), then imports the modules whose decorators register datasets, heads and
evaluators in Detectron2's registries.
"""
from . import _compat  # noqa: F401  (checks the installed Detectron2; any import order works)
from .config import add_longtailseg_config  # noqa: F401
from . import data  # noqa: F401  (registers the synthetic and real datasets)
from . import modeling  # noqa: F401  (registers heads)
from . import evaluation  # noqa: F401

__version__ = "0.1.0"
