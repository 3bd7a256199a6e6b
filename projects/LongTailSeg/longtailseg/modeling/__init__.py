"""Detectron2 adapters: registered semantic-segmentation heads and ROI heads."""
from . import roi_heads  # noqa: F401
from . import sem_seg  # noqa: F401
