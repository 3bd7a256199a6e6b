"""Classification losses on logits of pixels (N, C, H, W) or boxes (R, C), built by name.

``build_loss(name, class_counts=None, ignore_index=255, **options)`` returns an ``nn.Module``
whose ``forward(logits, targets, class_weights=None)`` takes integer targets of shape (N, H, W)
or (R,), gives ignored elements zero loss and zero gradient, multiplies the optional extra class
weights (e.g. DisAlign's GRW) into each element's loss as ``w[y]``, and divides by the number of
non-ignored elements (PAT with homogenization has its own normalisation, see ``PATLoss``).

Per-class quantities derived from the class counts are non-persistent buffers: they follow the
module's device but are not saved in checkpoints (they are recomputed from the class statistics).
"""
import math
import warnings
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from fvcore.common.registry import Registry

from .class_stats import positive_counts
from .precision import float32_math


class LossRegistry(Registry):
    """fvcore's ``Registry`` whose ``register`` also takes the name the config uses:
    ``@LOSS_REGISTRY.register("CE")``; plain ``@LOSS_REGISTRY.register()`` registers a class under
    its own name, as Detectron2's registries do."""

    def register(self, obj=None):
        if isinstance(obj, str):
            def deco(loss_class):
                self._do_register(obj, loss_class)
                return loss_class
            return deco
        return super().register(obj)


LOSS_REGISTRY = LossRegistry("LONG_TAIL_LOSS")
LOSS_REGISTRY.__doc__ = """Classification losses, by the name MODEL.LONG_TAIL.LOSS.NAME gives.

A registered class takes ``(class_counts=None, ignore_index=255, **options)`` and declares, as
:class:`ClassificationLoss` does with defaults (subclass it): ``needs_class_counts``,
``box_classifier_problem`` (why it must not train the K + 1-way box classifier; "" = it may),
``sigmoid_scores`` (test-time box scores are sigmoids), ``needs_background_column`` (K + 1-way
box classifiers only), ``options_from_config(loss_cfg)`` (its options from MODEL.LONG_TAIL.LOSS) and
``set_iteration(iteration)`` (what it does with the training iteration; the trainer calls it
before every step). Nothing outside the class tests its name.
"""


def _valid_elements(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int):
    """Logits as (M, C) rows, targets as (M,), both restricted to the non-ignored elements, and
    the mask of those elements over all N*H*W (or R) elements.

    Selecting rows (rather than masking the loss) keeps ignored elements out of the graph, so
    their gradient is exactly zero even where their loss would be inf or nan.
    """
    if logits.dim() < 2:
        raise ValueError(f"logits must be (R, C) or (N, C, ...), got shape {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    rows = logits if logits.dim() == 2 else logits.movedim(1, -1).reshape(-1, num_classes)
    flat_targets = targets.reshape(-1)
    if flat_targets.numel() != rows.shape[0]:
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match logits of shape "
                         f"{tuple(logits.shape)}")
    valid = flat_targets != ignore_index
    return rows[valid], flat_targets[valid], valid


def effective_number_weights(class_counts: Sequence[float], beta: float) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019, eq. 8): (1 - beta) / (1 - beta^n_c), normalised
    to sum to C as in the paper. Expects raw counts: the weights are not scale-invariant."""
    counts = positive_counts(class_counts)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return weights * counts.numel() / weights.sum()


def _log_priors(class_counts: Sequence[float]) -> torch.Tensor:
    counts = positive_counts(class_counts)
    return (counts / counts.sum()).log()


class ClassificationLoss(nn.Module):
    """Per-element loss ``element_losses(z, y)`` on non-ignored rows, times ``class_weights[y]``,
    averaged over the non-ignored elements (sum / count, the project's weighted-CE convention)."""

    # Declared by each loss (see LOSS_REGISTRY): whether it is built with the training split's
    # class counts, and why it must not train the K + 1-way box classifier ("" = it may; for
    # boxes the background column is by far the most frequent class).
    needs_class_counts = False
    box_classifier_problem = ""
    # Test-time scores are sigmoids of the foreground logits (sigmoid losses) instead of a softmax.
    sigmoid_scores = False
    # Only for a K + 1-way box classifier (its last column background): pixel heads refuse it.
    needs_background_column = False

    # Every loss, the registry's and one's own, runs in float32 with autocast off under mixed
    # precision: its count-derived tensors and exponentials overflow or round away in half
    # precision (longtail/precision.py).
    __call__ = float32_math(nn.Module.__call__)

    def __init__(self, class_counts: Optional[Sequence[float]] = None, ignore_index: int = 255):
        super().__init__()
        if self.needs_class_counts and class_counts is None:
            raise ValueError(f"{type(self).__name__} needs the class counts")
        self.ignore_index = ignore_index

    @classmethod
    def options_from_config(cls, loss_cfg) -> dict:
        """Keyword arguments of ``__init__`` from MODEL.LONG_TAIL.LOSS (none by default)."""
        return {}

    def set_iteration(self, iteration: int) -> None:
        """Told the training iteration before every step (nothing by default; LDAM's DRW)."""

    def element_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss of each labelled row (R, C) -> (R,); each registered loss defines it."""
        raise NotImplementedError

    def check_num_classes(self, num_classes: int) -> None:
        """Told the classifier's column count once, when built: raise ValueError if the options
        cannot train on logits with ``num_classes`` columns (none by default; PAT's constant can
        saturate), or size per-class state (EQLv2's gradient sums)."""

    def forward(self, logits, targets, class_weights=None):
        rows, labels, valid = _valid_elements(logits, targets, self.ignore_index)
        losses = self.element_losses(rows, labels)
        if class_weights is not None:
            losses = losses * class_weights.to(losses)[labels]
        return self.reduce(losses, labels, valid, logits)

    def reduce(self, losses, labels, valid, logits):
        return losses.sum() / valid.sum().clamp(min=1)


class TargetLogProbLoss(ClassificationLoss):
    """A loss that needs only log p_y per element (Focal, PAT): ``losses_from_log_p``.

    ``forward`` takes log-softmax over the class axis of the whole (N, C, ...) tensor and gathers
    the target column, so the logits are never copied into (M, C) rows: peak memory stays at
    CE's (PAT paper, sec. 4: their PAT was far heavier than CE). Ignored elements are dropped
    after the gather; their upstream gradient is 0, so their gradient is exactly 0 for finite
    logits.
    """

    def prepare_logits(self, logits):
        return logits

    def losses_from_log_p(self, log_p: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Loss of each element from its log p_y (M,) -> (M,); each subclass defines it."""
        raise NotImplementedError

    def element_losses(self, logits, targets):
        log_p = F.log_softmax(self.prepare_logits(logits), dim=1).gather(1, targets[:, None]).squeeze(1)
        return self.losses_from_log_p(log_p, logits.shape[1])

    def forward(self, logits, targets, class_weights=None):
        if logits.dim() < 2 or targets.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(f"targets of shape {tuple(targets.shape)} do not match logits of shape "
                             f"{tuple(logits.shape)}")
        valid = targets != self.ignore_index
        safe_targets = targets.masked_fill(~valid, 0)
        log_p = F.log_softmax(self.prepare_logits(logits), dim=1)
        log_p = log_p.gather(1, safe_targets.unsqueeze(1)).squeeze(1)[valid]
        labels = targets[valid]
        losses = self.losses_from_log_p(log_p, logits.shape[1])
        if class_weights is not None:
            losses = losses * class_weights.to(losses)[labels]
        return self.reduce(losses, labels, valid.reshape(-1), logits)


@LOSS_REGISTRY.register("CE")
class CrossEntropyLoss(ClassificationLoss):
    """Softmax cross-entropy, optionally class-weighted.

    With weights the sum of w[y_i] * CE_i is divided by the number of non-ignored elements, not
    by sum w[y_i] as ``F.cross_entropy(weight=...)`` does: GRW's weights are normalised to sum to
    C so that the weighted loss keeps plain CE's scale (mmsegmentation, which the DisAlign
    authors' segmentation code uses, also divides by the element count).
    """

    def forward(self, logits, targets, class_weights=None):
        per_element = F.cross_entropy(logits, targets, weight=class_weights,
                                      ignore_index=self.ignore_index, reduction="none")
        valid = (targets != self.ignore_index).sum()
        return per_element.sum() / valid.clamp(min=1)


@LOSS_REGISTRY.register("Focal")
class FocalLoss(TargetLogProbLoss):
    """Softmax focal loss (Lin et al. 2017, eq. 5 without alpha): -(1 - p_y)^gamma log p_y."""

    @classmethod
    def options_from_config(cls, loss_cfg):
        return dict(gamma=loss_cfg.FOCAL_GAMMA)

    def __init__(self, class_counts=None, ignore_index=255, gamma: float = 2.0):
        super().__init__(class_counts, ignore_index)
        self.gamma = gamma

    def losses_from_log_p(self, log_p, num_classes):
        return -(1.0 - log_p.exp()).pow(self.gamma) * log_p


@LOSS_REGISTRY.register("CB")
class ClassBalancedLoss(ClassificationLoss):
    """Class-balanced CE (Cui et al. 2019, eq. 8): CE weighted by ``effective_number_weights``."""

    needs_class_counts = True
    box_classifier_problem = "its effective-number weights would give background the smallest weight"

    @classmethod
    def options_from_config(cls, loss_cfg):
        return dict(beta=loss_cfg.CB_BETA)

    def __init__(self, class_counts=None, ignore_index=255, beta: float = 0.9999):
        super().__init__(class_counts, ignore_index)
        self.register_buffer("cb_weights", effective_number_weights(class_counts, beta).float(),
                             persistent=False)

    def element_losses(self, logits, targets):
        ce = F.cross_entropy(logits, targets, reduction="none")
        return self.cb_weights.to(ce)[targets] * ce


@LOSS_REGISTRY.register("CBFocal")
class ClassBalancedFocalLoss(ClassBalancedLoss):
    """Class-balanced focal loss (Cui et al. 2019, sec. 4): CB weights times softmax focal."""

    @classmethod
    def options_from_config(cls, loss_cfg):
        return dict(beta=loss_cfg.CB_BETA, gamma=loss_cfg.FOCAL_GAMMA)

    def __init__(self, class_counts=None, ignore_index=255, beta: float = 0.9999, gamma: float = 2.0):
        super().__init__(class_counts, ignore_index, beta)
        self.focal = FocalLoss(gamma=gamma)

    def element_losses(self, logits, targets):
        return self.cb_weights.to(logits)[targets] * self.focal.element_losses(logits, targets)


@LOSS_REGISTRY.register("BMS")
class BalancedSoftmaxLoss(ClassificationLoss):
    """Balanced softmax (Ren et al. 2020, eq. 4): CE on z_c + log n_c. The log prior
    log(n_c / sum n) is used instead of log n_c: softmax ignores the constant shift."""

    needs_class_counts = True

    def __init__(self, class_counts=None, ignore_index=255):
        super().__init__(class_counts, ignore_index)
        self.register_buffer("log_prior", _log_priors(class_counts).float(), persistent=False)

    def element_losses(self, logits, targets):
        return F.cross_entropy(logits + self.log_prior.to(logits), targets, reduction="none")


@LOSS_REGISTRY.register("LA")
class LogitAdjustedLoss(ClassificationLoss):
    """Logit-adjusted loss (Menon et al. 2021, eq. 10): CE on z_c + tau * log r_c, r_c the
    class prior n_c / sum n."""

    needs_class_counts = True

    @classmethod
    def options_from_config(cls, loss_cfg):
        return dict(tau=loss_cfg.LA_TAU)

    def __init__(self, class_counts=None, ignore_index=255, tau: float = 1.0):
        super().__init__(class_counts, ignore_index)
        self.register_buffer("log_prior", _log_priors(class_counts).float(), persistent=False)
        self.tau = tau

    def element_losses(self, logits, targets):
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits), targets, reduction="none")


@LOSS_REGISTRY.register("LDAM")
class LDAMLoss(ClassificationLoss):
    """LDAM (Cao et al. 2019, eq. 13): CE on s * (z - m_y e_y), m_c proportional to n_c^(-1/4)
    with the largest margin equal to ``max_margin``.

    The paper's logits come from normalised features and weights, hence s = 30; on a plain
    linear classifier a scale of 1 keeps the logits' range. Deferred re-weighting (DRW, paper
    sec. 3.3): from ``iteration >= drw_start`` on, each element is weighted by the CB weights
    with ``drw_beta``; the trainer tells it the iteration (``set_iteration``; None = no DRW). As everywhere here
    the weighted sum is divided by the element count, not by the sum of weights.
    """

    needs_class_counts = True

    @classmethod
    def options_from_config(cls, loss_cfg):
        return dict(max_margin=loss_cfg.LDAM_MAX_MARGIN, scale=loss_cfg.LDAM_SCALE,
                    drw_start=loss_cfg.LDAM_DRW_START if loss_cfg.LDAM_DRW_START >= 0 else None,
                    drw_beta=loss_cfg.LDAM_DRW_BETA)

    def __init__(self, class_counts=None, ignore_index=255, max_margin: float = 0.5,
                 scale: float = 30.0, drw_start: Optional[int] = None, drw_beta: float = 0.9999):
        super().__init__(class_counts, ignore_index)
        margins = positive_counts(class_counts).pow(-0.25)
        self.register_buffer("margins", (margins * (max_margin / margins.max())).float(),
                             persistent=False)
        self.register_buffer("drw_weights", effective_number_weights(class_counts, drw_beta).float(),
                             persistent=False)
        self.scale = scale
        self.drw_start = drw_start
        self.iteration = 0

    def set_iteration(self, iteration):
        self.iteration = iteration

    def element_losses(self, logits, targets):
        margin = F.one_hot(targets, logits.shape[1]).to(logits) * self.margins.to(logits)[targets, None]
        ce = F.cross_entropy(self.scale * (logits - margin), targets, reduction="none")
        if self.drw_start is not None and self.iteration >= self.drw_start:
            ce = ce * self.drw_weights.to(ce)[targets]
        return ce


@LOSS_REGISTRY.register("Seesaw")
class SeesawLoss(ClassificationLoss):
    """Seesaw loss (Wang et al. 2021, eqs. 2-4): CE with each negative logit z_j of an element of
    class i shifted by log S_ij, S_ij = M_ij * C_ij,
    M_ij = (n_j / n_i)^p if n_j < n_i else 1, C_ij = (sigma_j / sigma_i)^q if sigma_j > sigma_i else 1.

    Static version: n are the given class counts, whereas the paper accumulates them online over
    training. sigma (the softmax of the logits) enters as a constant factor, with no gradient
    through it, as S_ij is a re-weighting of the negative terms.
    """

    needs_class_counts = True
    # Seesaw's own detector keeps background out of the classifier with an objectness branch.
    box_classifier_problem = "it would mitigate the penalties that background boxes put on foreground classes"

    @classmethod
    def options_from_config(cls, loss_cfg):
        return dict(p=loss_cfg.SEESAW_P, q=loss_cfg.SEESAW_Q)

    def __init__(self, class_counts=None, ignore_index=255, p: float = 0.8, q: float = 2.0):
        super().__init__(class_counts, ignore_index)
        self.register_buffer("log_counts", positive_counts(class_counts).log().float(), persistent=False)
        self.p, self.q = p, q

    def element_losses(self, logits, targets):
        log_counts = self.log_counts.to(logits)
        # log M_ij = p * min(0, log n_j - log n_i); zero on the true class itself.
        log_mitigation = self.p * (log_counts[None, :] - log_counts[targets, None]).clamp(max=0)
        log_sigma = F.log_softmax(logits.detach(), dim=1)
        log_sigma_true = log_sigma.gather(1, targets[:, None])
        # log C_ij = q * max(0, log sigma_j - log sigma_i); zero on the true class itself.
        log_compensation = self.q * (log_sigma - log_sigma_true).clamp(min=0)
        return F.cross_entropy(logits + log_mitigation + log_compensation, targets, reduction="none")


@LOSS_REGISTRY.register("PAT")
class PATLoss(TargetLogProbLoss):
    """Pixel-wise adaptive training, the authors' released form (their ``ina`` loss):
    p = softmax(z / tau), beta_c = 1/2 exp(K (1 - p_c)), loss = mean over (elements, classes) of
    -beta_c y_c log p_c. Only the true class term is nonzero, so an element's loss is
    -beta_y log p_y / C: the 1/C of the mean over the class axis is kept, as in their code.

    K is ``constant`` or, if None, the number of classes C (the authors' code). exp(C (1 - p))
    overflows float32 for C = 150, so the exponent is bounded: min(K (1 - p_y), max_exponent); a
    warning is issued once per process when the bound is active. A K above ``max_exponent``
    saturates: beta = exp(max_exponent) / 2 (5e12 at 30) for every pixel with p_y < 1 -
    max_exponent / K, i.e. every pixel early in training, and the loss cannot train. Such a K is
    refused (``__init__`` for an explicit constant, :meth:`check_num_classes` for K = C), so the
    bound only guards direct calls. The config default K = 3 trains at any C (beta <= e^3 / 2 ~ 10);
    K = C = 19 diverged on the synthetic set (loss 8e14, NaN at iteration 3).
    beta is not detached unless ``detach_beta``.

    Class-wise gradient homogenization (PAT paper), if ``homogenize``: the losses of each class's
    pixels in an image are averaged over that class's mask (divided by |M_c|), the image's loss is
    the mean over its present classes, and the result is the mean over images with at least one
    non-ignored pixel. Box logits (R, C) have no image axis: the whole batch counts as one image
    (per-class averaging over the batch). Without homogenization: mean over non-ignored elements.
    """

    _bound_warned = False  # class-level: one warning per process

    @classmethod
    def options_from_config(cls, loss_cfg):
        return dict(tau=loss_cfg.PAT_TAU, constant=loss_cfg.PAT_CONSTANT or None,
                    detach_beta=loss_cfg.PAT_DETACH_BETA, max_exponent=loss_cfg.PAT_MAX_EXPONENT,
                    homogenize=loss_cfg.PAT_HOMOGENIZE)

    def __init__(self, class_counts=None, ignore_index=255, tau: float = 1.0,
                 constant: Optional[float] = None, detach_beta: bool = False,
                 max_exponent: float = 30.0, homogenize: bool = True):
        super().__init__(class_counts, ignore_index)
        self.tau = tau
        self.constant = constant
        self.detach_beta = detach_beta
        self.max_exponent = max_exponent
        self.homogenize = homogenize
        if constant is not None:
            self._check_constant(constant, "")

    def check_num_classes(self, num_classes):
        if self.constant is None:
            self._check_constant(num_classes, f" (0 = the number of classes, {num_classes})")

    def _check_constant(self, k, which):
        if k > self.max_exponent:
            raise ValueError(
                f"MODEL.LONG_TAIL.LOSS.PAT_CONSTANT K = {k:g}{which} exceeds PAT_MAX_EXPONENT = "
                f"{self.max_exponent:g}: beta = exp(K (1 - p_y)) / 2 saturates at "
                f"{0.5 * math.exp(self.max_exponent):.1e} whenever p_y < {1 - self.max_exponent / k:.2f} "
                f"and the loss cannot train; set PAT_CONSTANT to at most {self.max_exponent:g} "
                "(the default 3.0 trains at any class count)"
            )

    def prepare_logits(self, logits):
        # No division at tau = 1: it would copy the logits, PAT's largest tensor.
        return logits if self.tau == 1 else logits / self.tau

    def losses_from_log_p(self, log_p, num_classes):
        k = num_classes if self.constant is None else self.constant
        exponent = k * (1.0 - log_p.exp())
        # K (1 - p) <= K, so the bound can only be active when K exceeds it; checking only then,
        # and only until the first warning, avoids a device sync on every step.
        if k > self.max_exponent and not PATLoss._bound_warned and bool((exponent > self.max_exponent).any()):
            PATLoss._bound_warned = True
            warnings.warn(f"PAT: K (1 - p) exceeds max_exponent={self.max_exponent} (K={k}); beta is "
                          f"bounded by exp({self.max_exponent})/2. Lower MODEL.LONG_TAIL.LOSS.PAT_CONSTANT "
                          "or raise PAT_TAU to stay below the bound.", RuntimeWarning)
        beta = 0.5 * exponent.clamp(max=self.max_exponent).exp()
        if self.detach_beta:
            beta = beta.detach()
        return -beta * log_p / num_classes

    def reduce(self, losses, labels, valid, logits):
        if not self.homogenize:
            return super().reduce(losses, labels, valid, logits)
        num_classes = logits.shape[1]
        num_images = logits.shape[0] if logits.dim() > 2 else 1
        per_image = valid.numel() // num_images
        image = torch.arange(num_images, device=labels.device).repeat_interleave(per_image)[valid]
        key = image * num_classes + labels
        sums = losses.new_zeros(num_images * num_classes).index_add(0, key, losses)
        sizes = torch.bincount(key, minlength=num_images * num_classes).to(losses.dtype)
        class_means = (sums / sizes.clamp(min=1)).view(num_images, num_classes)
        present = (sizes > 0).view(num_images, num_classes).sum(1)
        image_losses = class_means.sum(1) / present.clamp(min=1)
        return image_losses.sum() / (present > 0).sum().clamp(min=1)


def federated_classes(gt_classes: torch.Tensor, num_classes: int, min_classes: int,
                      class_weights: torch.Tensor) -> torch.Tensor:
    """The classes of the federated loss (Zhou et al. 2021, "Probabilistic two-stage detection",
    the LVIS recipe of Detectron2 main): every class of the batch's ground truth, plus negative
    classes drawn without replacement with probability proportional to ``class_weights`` (image
    counts to a power) until there are ``min_classes``. ``gt_classes`` holds labels in [0, K],
    K meaning background (never drawn, never returned unless present as a label)."""
    present = torch.unique(gt_classes)
    if len(present) >= min_classes:
        return present
    draw = gt_classes.new_zeros(num_classes + 1, dtype=torch.float32)
    draw[:num_classes] = class_weights.float()
    draw[present] = 0  # present classes are already in; background is never drawn
    negatives = torch.multinomial(draw, min_classes - len(present), replacement=False)
    return torch.cat([present, negatives])


class SigmoidCrossEntropyLoss(ClassificationLoss):
    """Sigmoid cross-entropy of a K + 1-way box classifier (background last): one binary CE per
    foreground class, target 1 on the box's class, 0 elsewhere (a background box is negative for
    all K); the background logit is not used. An element's loss is the sum of its K terms, so the
    mean over boxes is Detectron2 main's ``sum / N`` (``MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE``).

    Federated loss (``fed_class_weights`` given, ``USE_FED_LOSS``): only the columns of
    :func:`federated_classes` count, drawn anew for every batch, so a class is penalised as a
    negative only where it was likely annotated. Built directly by the box classifier from
    Detectron2's keys, not by MODEL.LONG_TAIL.LOSS.NAME.
    """

    # Scores at test time are the sigmoids of the foreground logits, not a softmax.
    sigmoid_scores = True

    def __init__(self, class_counts=None, ignore_index=-1, fed_class_weights=None,
                 fed_num_classes: int = 50):
        super().__init__(class_counts, ignore_index)
        weights = None if fed_class_weights is None else torch.as_tensor(fed_class_weights).float()
        self.register_buffer("fed_class_weights", weights, persistent=False)
        self.fed_num_classes = fed_num_classes

    def binary_targets(self, logits, targets):
        """(M, K) one-hot targets of the foreground columns (all zero for background)."""
        k = logits.shape[1] - 1
        return F.one_hot(targets, k + 1)[:, :k].to(logits)

    def column_weights(self, logits, targets, binary_targets):
        """(M, K) or (1, K) weights of the binary terms: the federated classes' mask, else 1."""
        k = logits.shape[1] - 1
        if self.fed_class_weights is None:
            return logits.new_ones(1, k)
        kept = federated_classes(targets, k, self.fed_num_classes, self.fed_class_weights.to(logits.device))
        mask = logits.new_zeros(k + 1)
        mask[kept] = 1
        return mask[None, :k]

    def element_losses(self, logits, targets):
        y = self.binary_targets(logits, targets)
        terms = F.binary_cross_entropy_with_logits(logits[:, :-1], y, reduction="none")
        return (terms * self.column_weights(logits, targets, y)).sum(1)


@LOSS_REGISTRY.register("EQLv2")
class EqualizationLossV2(SigmoidCrossEntropyLoss):
    """Equalization loss v2 (Tan et al., CVPR 2021): sigmoid CE whose positive and negative
    terms of class j are weighted by r_j and q_j from the accumulated gradient ratio::

        g_j = sum_t |grad_pos_j^t| / sum_t |grad_neg_j^t|                    (eq. 5)
        q_j = f(g_j),  r_j = 1 + alpha (1 - q_j)                              (eq. 6)
        f(x) = 1 / (1 + exp(-gamma (x - mu)))                                 (eq. 7)

    (paper: gamma 12, mu 0.8, alpha 4). |grad| of a term is the magnitude of the weighted loss's
    gradient on its logit, w |sigmoid(z) - y|, summed over the batch's boxes, positives and
    negatives apart, and accumulated over training (persistent buffers: resume is exact). The
    weights of a step come from the gradients of the steps before it; before any gradient
    (the first step) they are 1, i.e. plain sigmoid CE. As in :class:`SigmoidCrossEntropyLoss` the
    background logit is not used (Detectron2 main's layout) and the loss is the sum over
    foreground columns, mean over boxes. K + 1-way box classifiers only. With several training
    processes, DistributedDataParallel broadcasts process 0's buffers before each step, so the
    statistics are those of process 0's boxes.
    """

    needs_background_column = True

    @classmethod
    def options_from_config(cls, loss_cfg):
        return dict(gamma=loss_cfg.EQLV2_GAMMA, mu=loss_cfg.EQLV2_MU, alpha=loss_cfg.EQLV2_ALPHA)

    def __init__(self, class_counts=None, ignore_index=-1, gamma: float = 12.0, mu: float = 0.8,
                 alpha: float = 4.0, **kwargs):
        super().__init__(class_counts, ignore_index, **kwargs)
        self.gamma, self.mu, self.alpha = gamma, mu, alpha
        # Sized on the first call (the loss is built without the class count).
        self.register_buffer("positive_gradients", torch.zeros(0))
        self.register_buffer("negative_gradients", torch.zeros(0))

    def check_num_classes(self, num_classes):
        """Told the classifier's column count (K + 1): sizes the K classes' gradient sums, so that
        a checkpoint's accumulated sums load into a freshly built model."""
        if self.positive_gradients.numel() != num_classes - 1:
            self.positive_gradients = torch.zeros(num_classes - 1)
            self.negative_gradients = torch.zeros(num_classes - 1)

    def term_weights(self, num_classes):
        """(q, r): the negative and positive weights of the K classes (eq. 6-7); ones before any
        gradient was accumulated."""
        if self.positive_gradients.numel() != num_classes or not bool(self.negative_gradients.any()):
            ones = torch.ones(num_classes, device=self.positive_gradients.device)
            return ones, ones
        ratio = self.positive_gradients / self.negative_gradients.clamp(min=1e-12)
        q = torch.sigmoid(self.gamma * (ratio - self.mu))
        return q, 1.0 + self.alpha * (1.0 - q)

    def column_weights(self, logits, targets, binary_targets):
        k = logits.shape[1] - 1
        q, r = (w.to(logits) for w in self.term_weights(k))
        weights = binary_targets * r + (1.0 - binary_targets) * q
        return weights * super().column_weights(logits, targets, binary_targets)

    def element_losses(self, logits, targets):
        y = self.binary_targets(logits, targets)
        weights = self.column_weights(logits, targets, y)
        z = logits[:, :-1]
        if self.training and torch.is_grad_enabled():
            self._accumulate(z.detach(), y, weights.detach())
        terms = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        return (terms * weights).sum(1)

    @torch.no_grad()
    def _accumulate(self, z, y, weights):
        gradient = weights * (torch.sigmoid(z) - y).abs()  # |d(w * BCE) / dz|
        k = z.shape[1]
        if self.positive_gradients.numel() != k:
            self.positive_gradients = z.new_zeros(k)
            self.negative_gradients = z.new_zeros(k)
        self.positive_gradients += (gradient * y).sum(0)
        self.negative_gradients += (gradient * (1.0 - y)).sum(0)


def loss_class(name: str):
    """The class registered as ``name``; KeyError naming the choices for an unknown name."""
    if name not in LOSS_REGISTRY:
        raise KeyError(f"unknown loss {name!r}; choose one of {sorted(n for n, _ in LOSS_REGISTRY)}")
    return LOSS_REGISTRY.get(name)


def loss_needs_class_counts(name: str) -> bool:
    return loss_class(name).needs_class_counts


def loss_options(name: str, loss_cfg) -> dict:
    """Keyword arguments of loss ``name`` read from MODEL.LONG_TAIL.LOSS (any attribute-access
    config node)."""
    return loss_class(name).options_from_config(loss_cfg)


def build_loss(name: str, class_counts: Optional[Sequence[float]] = None, ignore_index: int = 255,
               **options) -> ClassificationLoss:
    """The loss registered as ``name``; ``options`` are its keyword arguments (see its class).
    Raises KeyError for an unknown name, ValueError if it needs class counts and has none."""
    return loss_class(name)(class_counts=class_counts, ignore_index=ignore_index, **options)
