"""Cosine classifier: a linear classifier on L2-normalised features and weight rows, times a
learnable scale (the "cosine normalisation" rows of the DisAlign LVIS tables)::

    z_c = s * <x / |x|, w_c / |w_c|>        s learnable, initialised to 20, no bias

so every logit lies in [-|s|, |s|]. The DisAlign authors' detection head uses it for all K + 1
outputs of the box classifier, background included; the ROI heads here do the same.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .precision import float32_math


class CosineClassifier(nn.Module):
    """``forward(x)`` maps features (N, in_features) to logits (N, num_classes).

    Args:
        in_features: feature channels.
        num_classes: outputs (for a box classifier: K foreground classes + background).
        init_scale: initial value of the learnable scale s (authors: 20).
        weight_init_std: std of the weight rows' normal init (only their directions matter).
    """

    def __init__(self, in_features: int, num_classes: int, init_scale: float = 20.0,
                 weight_init_std: float = 0.01):
        super().__init__()
        if init_scale <= 0:
            raise ValueError(f"the cosine classifier's initial scale must be > 0, got {init_scale}")
        self.in_features = in_features
        self.out_features = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=weight_init_std)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    @float32_math  # F.normalize's eps (1e-12) is 0 in float16; s cos feeds a softmax
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalize() divides by max(|v|, eps): a zero feature gives zero logits, not nan.
        cosine = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        return self.scale * cosine

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, learnable scale"
