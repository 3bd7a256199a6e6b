"""DisAlign: distribution alignment (Zhang et al., "Distribution Alignment: A Unified Framework
for Long-tail Visual Recognition", CVPR 2021).

Stage 2 keeps the stage-1 model frozen and learns, per class j, a magnitude alpha_j and margin
beta_j, blended with the original logit by an input-dependent confidence sigma(x) (paper Eq. 2-3;
blend as in the authors' detection and segmentation code)::

    s_j   = alpha_j * z_j + beta_j
    z^_j  = sigma(x) * s_j + (1 - sigma(x)) * z_j,   sigma(x) = sigmoid(v^T x + b)

x is the feature the classifier reads. alpha = 1, beta = 0 at the start, so stage 2 starts from
exactly the stage-1 model. The confidence layer is a plain 1x1 conv (pixels) or Linear (boxes)
followed by a sigmoid, as the paper writes it; the authors' mmseg head put BN + ReLU before the
sigmoid, which pins sigma(x) to [0.5, 1).

Generalized re-weighting (paper Eq. 8) gives the class weights of the stage-2 loss.
"""
from typing import Optional, Sequence

import torch
from torch import nn

from .class_stats import positive_counts


def generalized_reweighting(class_counts: Sequence[float], rho: float) -> torch.Tensor:
    """w_c = r_c^(-rho), normalised to sum to C (the authors' code; keeps CE's loss scale).

    rho = 0 gives all ones. Counts may be integers or frequencies (objectInfo150 ratios); a class
    never seen counts as the rarest seen one.
    """
    counts = positive_counts(class_counts)
    weights = (counts / counts.sum()).pow(-float(rho))
    return (weights * counts.numel() / weights.sum()).float()


class DisAlignCalibration(nn.Module):
    """Adaptive calibration of the first ``num_classes`` logits; further columns pass through.

    Args:
        num_classes: calibrated classes (C for pixels; K foreground classes for boxes, whose
            background logit is the last column and is left unchanged).
        in_channels: channels of the feature x that the classifier reads.
        spatial: True for pixel logits (N, C, H, W) with features (N, F, H, W) (1x1 conv);
            False for box logits (R, C[+1]) with features (R, F) (Linear).
        confidence_init_std: std of the confidence layer's normal init (authors: 0.01 for
            boxes); bias starts at 0.
    """

    # A second stage trains this module alone; everything else is frozen (engine/stage2.py).
    trained_in_second_stage = True

    def __init__(self, num_classes: int, in_channels: int, spatial: bool,
                 confidence_init_std: Optional[float] = 0.01):
        super().__init__()
        self.num_classes = num_classes
        self.spatial = spatial
        self.alpha = nn.Parameter(torch.ones(num_classes))
        self.beta = nn.Parameter(torch.zeros(num_classes))
        layer = nn.Conv2d(in_channels, 1, kernel_size=1) if spatial else nn.Linear(in_channels, 1)
        if confidence_init_std is not None:
            nn.init.normal_(layer.weight, std=confidence_init_std)
            nn.init.zeros_(layer.bias)
        self.confidence = layer

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        k = self.num_classes
        shape = (1, k, 1, 1) if self.spatial else (1, k)
        confidence = torch.sigmoid(self.confidence(features))  # (N, 1, H, W) or (R, 1)
        z = logits[:, :k]
        # sigma * (alpha z + beta) + (1 - sigma) * z, written so that alpha = 1, beta = 0 gives
        # z bit for bit (stage 2 starts from exactly the stage-1 predictions).
        calibrated = z + confidence * ((self.alpha.view(shape) - 1.0) * z + self.beta.view(shape))
        if logits.shape[1] == k:
            return calibrated
        return torch.cat([calibrated, logits[:, k:]], dim=1)


def normalised_calibration(probabilities: torch.Tensor, class_counts: Sequence[float],
                           gamma: float) -> torch.Tensor:
    """NorCal (Pan et al., "On Model Calibration for Long-Tailed Object Detection and Instance
    Segmentation", NeurIPS 2021), post-hoc, no training: each foreground class's score is divided
    by its training frequency to a power, the background score is kept, and the scores are
    normalised to sum to 1 again::

        p'_c = (p_c / n_c^gamma) / (p_bg + sum_k p_k / n_k^gamma),   p'_bg = p_bg / (same sum)

    which is the softmax of the logits z_c - gamma log n_c (background unchanged).
    ``probabilities`` are (R, K + 1) softmax scores, background last; ``class_counts`` the K
    classes' training instance counts. gamma = 0 returns the scores unchanged.
    """
    counts = positive_counts(class_counts).to(probabilities)
    k = counts.numel()
    scaled = torch.cat([probabilities[:, :k] / counts.pow(float(gamma)), probabilities[:, k:]], dim=1)
    return scaled / scaled.sum(dim=1, keepdim=True).clamp(min=torch.finfo(scaled.dtype).tiny)
