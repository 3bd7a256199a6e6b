"""Backbones registered in Detectron2's BACKBONE_REGISTRY on import, and the conversion of their
published ImageNet weights."""
from .timm_backbone import TimmBackbone, build_timm_backbone  # noqa: F401
