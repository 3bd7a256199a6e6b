"""Long-tail ROI heads for LVIS, registered in ROI_HEADS_REGISTRY on import."""
from .roi_heads import (  # noqa: F401
    LongTailCascadeROIHeads,
    LongTailFastRCNNOutputLayers,
    LongTailStandardROIHeads,
)
