"""Detectron2 adapters: registered backbones, semantic-segmentation heads, RPN and ROI heads."""
from . import backbone  # noqa: F401
from . import encoders  # noqa: F401
from . import mit  # noqa: F401  (registers build_mit_backbone)
from . import proposal_generator  # noqa: F401
from . import roi_heads  # noqa: F401
from . import sem_seg  # noqa: F401
