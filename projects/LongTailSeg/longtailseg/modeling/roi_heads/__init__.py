"""Long-tail ROI heads for LVIS, registered in ROI_HEADS_REGISTRY on import."""
from .long_tail import LongTailFastRCNNOutputLayers, LongTailStandardROIHeads  # noqa: F401
