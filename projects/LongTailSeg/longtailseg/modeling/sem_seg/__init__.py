"""Semantic-segmentation heads, registered in SEM_SEG_HEADS_REGISTRY on import."""
from .deeplab import LongTailDeepLabV3PlusHead  # noqa: F401
from .decode_heads import LongTailFCNHead, LongTailOCRHead, LongTailPSPHead  # noqa: F401
from .medoe import MEDOEHead  # noqa: F401
from .model_ensemble import SemSegModelEnsemble  # noqa: F401
from .segnet import LongTailSegNetHead  # noqa: F401
from .unet import LongTailAttentionUNetHead, LongTailUNetHead, LongTailUNetPlusPlusHead  # noqa: F401
from .segformer import LongTailSegFormerHead  # noqa: F401
