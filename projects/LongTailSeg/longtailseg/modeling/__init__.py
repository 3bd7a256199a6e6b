"""Detectron2 adapters: registered semantic-segmentation heads and ROI heads."""
from . import sem_seg  # noqa: F401
