"""Classification losses on logits of pixels (N, C, H, W) or boxes (R, C), by name.

Every loss takes ``(logits, targets)`` with integer targets, honours ``ignore_index`` and
optional per-class weights, and averages over the non-ignored elements.
"""
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

LOSSES: Dict[str, Callable] = {}


def register_loss(name):
    def decorator(fn):
        LOSSES[name] = fn
        return fn

    return decorator


@register_loss("CE")
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: Optional[torch.Tensor] = None,
                  ignore_index: int = 255) -> torch.Tensor:
    """Softmax cross-entropy, optionally class-weighted.

    With weights the sum of w[y_i] * CE_i is divided by the number of non-ignored elements, not
    by sum w[y_i] as ``F.cross_entropy(weight=...)`` does: GRW's weights are normalised to sum to
    C so that the weighted loss keeps plain CE's scale (mmsegmentation, which the DisAlign
    authors' segmentation code uses, also divides by the element count).
    """
    per_element = F.cross_entropy(logits, targets, weight=class_weights, ignore_index=ignore_index,
                                  reduction="none")
    valid = (targets != ignore_index).sum()
    return per_element.sum() / valid.clamp(min=1)


def get_loss(name: str) -> Callable:
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]
