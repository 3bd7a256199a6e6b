"""BLV: balancing logit variation (Wang et al., "Balancing Logit Variation for Long-tailed
Semantic Segmentation", CVPR 2023), training only.

Every logit of class c is raised by a random amount that grows with the class's rarity::

    f_c = log(sum_k n_k) - log(n_c)                 (= -log r_c; largest for the rarest class)
    z~_c = z_c + |clamp(eps, -1, 1)| * f_c / max_k f_k,   eps ~ N(0, sigma^2)

per element (pixel or box) and per class, as in the authors' released code after their
bug-fix commit (default sigma = 4, so about 80 % of the draws saturate the clamp). Any loss is
then computed on z~; evaluation uses z unchanged. Noise is drawn on the logits' device and
dtype (the authors draw on the CPU and copy).

Cost: the draw is one uniform per element (PyTorch's Box-Muller uses both values of each pair),
which no exact sampler of this distribution in PyTorch undercuts (a Bernoulli for the
saturated 80 % plus a truncated half-normal for the rest measured over twice as slow on CPU).
What can go is the rest: on the CPU the noise goes into a buffer kept between steps, so a fresh
logit-sized tensor is not paged in on every step, and sigma is the normal's std (no extra pass).
The values are bit for bit those of ``randn_like(z) * sigma``.

Noise distributions (PAT, Sec. 5, compares BLV "with Gaussian, Uniform and Xavier" noise "along
with different standard deviations"; the paper gives no formulas, so these are our reading):

* ``gaussian`` (BLV's own, the default): eps ~ N(0, sigma^2).
* ``uniform``: eps ~ U(-sqrt(3) sigma, sqrt(3) sigma), the uniform law whose standard deviation
  is sigma.
* ``xavier``: eps drawn as ``torch.nn.init.xavier_normal_`` fills the logit-shaped noise tensor
  with gain sigma, N(0, (sigma * sqrt(2 / (fan_in + fan_out)))^2), PyTorch's fans of that tensor
  (pixels (N, C, H, W): fan_in = C H W, fan_out = N H W; boxes (R, C): fan_in = C, fan_out = R).
  Glorot's scale shrinks the noise with the tensor's size: on full-size pixel logits it is
  nearly zero, so this variant is close to the loss without BLV.

The clamp to [-1, 1], the absolute value and the rarity scale are the same for all three.
"""
import math
from typing import Sequence

import torch
from torch import nn

from .class_stats import positive_counts


BLV_DISTRIBUTIONS = ("gaussian", "uniform", "xavier")


def noise_std(distribution: str, sigma: float, shape: Sequence[int]) -> float:
    """The standard deviation of eps (before the clamp) for noise of ``shape``."""
    if distribution == "xavier":
        receptive = math.prod(shape[2:])
        fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
        return sigma * math.sqrt(2.0 / (fan_in + fan_out))
    return float(sigma)


def draw_noise(out: torch.Tensor, distribution: str, sigma: float) -> torch.Tensor:
    """Fill ``out`` with eps of ``distribution`` (``BLV_DISTRIBUTIONS``) and std parameter sigma."""
    if distribution == "gaussian":
        return out.normal_(0.0, sigma)
    if distribution == "uniform":
        half_width = math.sqrt(3.0) * sigma
        return out.uniform_(-half_width, half_width)
    if distribution == "xavier":
        return torch.nn.init.xavier_normal_(out, gain=sigma)
    raise ValueError(f"BLV noise distribution must be one of {', '.join(BLV_DISTRIBUTIONS)}, got {distribution!r}")


def rarity_scale(class_counts: Sequence[float]) -> torch.Tensor:
    """f_c / max_k f_k with f_c = log(sum n) - log(n_c); a class never seen counts as the rarest
    seen one. Returns zeros when all classes are equally frequent (every f_c is 0).
    """
    counts = positive_counts(class_counts)
    rarity = counts.sum().log() - counts.log()
    top = rarity.max()
    return (rarity / top if top > 0 else torch.zeros_like(rarity)).float()


class LogitVariation(nn.Module):
    """Adds BLV's class-dependent logit variation in training mode; identity in eval mode.

    Args:
        class_counts: n_c for the C classes the logits' class axis holds (training split).
        sigma: standard deviation of eps before clamping to [-1, 1] (``xavier``: the gain).
        class_dim: the class axis: 1 for pixel logits (N, C, H, W) and box logits (R, C).
        distribution: eps's law, one of ``BLV_DISTRIBUTIONS`` (module docstring).
    """

    def __init__(self, class_counts: Sequence[float], sigma: float = 4.0, class_dim: int = 1,
                 distribution: str = "gaussian"):
        super().__init__()
        if sigma < 0:
            raise ValueError(f"BLV sigma must be >= 0, got {sigma}")
        if distribution not in BLV_DISTRIBUTIONS:
            raise ValueError(f"BLV noise distribution must be one of {', '.join(BLV_DISTRIBUTIONS)}, "
                             f"got {distribution!r}")
        self.sigma = float(sigma)
        self.distribution = distribution
        self.class_dim = class_dim
        self.register_buffer("scale", rarity_scale(class_counts), persistent=False)
        self._noise = None  # CPU noise buffer, reused while the logits' shape and dtype stay

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.training or self.sigma == 0:
            return logits
        num_classes = self.scale.numel()
        if logits.shape[self.class_dim] != num_classes:
            raise ValueError(
                f"BLV expects {num_classes} classes on axis {self.class_dim}, "
                f"got logits of shape {tuple(logits.shape)}"
            )
        shape = [1] * logits.dim()
        shape[self.class_dim] = num_classes
        scale = self.scale.to(dtype=logits.dtype).view(shape)
        noise = draw_noise(self._noise_buffer(logits), self.distribution, self.sigma).clamp_(-1.0, 1.0).abs_()
        return torch.addcmul(logits, noise, scale)  # one pass over the logits, not two

    def _noise_buffer(self, logits: torch.Tensor) -> torch.Tensor:
        """Where the noise is drawn. On the CPU a buffer kept between calls: a fresh tensor of
        the logits' size is a page fault per page on every step. On a GPU the caching allocator
        makes a fresh one free, and a kept buffer would only hold memory."""
        if logits.device.type != "cpu":
            return torch.empty_like(logits)
        noise = self._noise
        if noise is None or noise.shape != logits.shape or noise.dtype != logits.dtype:
            noise = self._noise = torch.empty(logits.shape, dtype=logits.dtype)
        return noise

    def extra_repr(self) -> str:
        return (f"sigma={self.sigma}, distribution={self.distribution}, num_classes={self.scale.numel()}, "
                f"class_dim={self.class_dim}")
