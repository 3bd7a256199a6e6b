"""MEDOE: multi-expert decoder and output ensemble ("MEDOE: A Multi-Expert Decoder
and Output Ensemble Framework for Long-tailed Semantic Segmentation", arXiv 2308.08213).

The paper's equations did not survive; what its text states and what is chosen here where it is
silent (see ARCHITECTURE.md, "MEDOE"):

* Expert k owns a class set S_k built from the head / body / tail groups, with overlap (expert 1
  all classes, expert 2 body + tail, expert 3 tail). Its logits outside S_k are masked, so its
  softmax is a distribution over S_k.
* Stage 1 loss of expert k: CE over the pixels whose label is in S_k (mean over those pixels, the
  paper's "normalised by their pixel count") + lambda * (L2 + KL), where L2 is the mean squared
  logit of S_k at "interfering" pixels (labelled with a class outside S_k), which pushes the
  expert to an unconfident, flat output there, and KL is KL(q || p_bar) per image between the
  ground-truth class distribution q over S_k and the expert's mean predicted distribution p_bar
  over the same pixels. CE is taken on the logits upsampled to the labels (for experts 2..K
  evaluated at the owned pixels only, ``expert_cross_entropy_upsampled``); L2 and KL on the
  logits at their own resolution against the labels at those pixels (``labels_at``; a
  deviation: the paper does not say, and at full resolution they cost more than the CE).
* Oracle (the paper's dagger rows): each pixel takes the most specific expert (fewest classes)
  whose set holds its ground-truth class.
* Stage 2, MOE: per expert k and class c a calibration a_kc * log p_kc + b_kc and a decision
  weight w_kc (softmax over the experts owning c), combined by a softmax over classes; trained with
  CE and a penalty on the probability mass given to tail classes at pixels that are not tail (the
  tail over-confidence the paper names).
* Baselines: softmax threshold (the most specific expert whose top probability reaches the
  threshold, 0.3), argmax of expert confidence, group average.

Pure PyTorch: the Detectron2 head in ``modeling/sem_seg/medoe.py`` calls these functions.
Expert outputs are stacked as ``(K, N, C, H, W)``; the masks are ``(K, C)`` booleans.
"""
import math
from typing import Iterable, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# Under mixed precision the losses and log-probabilities below run in float32 (@float32_math):
# masked logits at the dtype's lowest value, the 1e-12 guards and the log-space MOE sum need it.
from .precision import float32_math, to_float32

ENSEMBLES = ("none", "MOE", "softmax_threshold", "argmax_confidence", "group_average")
# log of the smallest probability the MOE ensemble reads: a softmax can underflow to 0.
LOG_PROBABILITY_FLOOR = math.log(1e-30)


def expert_class_masks(class_groups: Mapping[str, Sequence[int]],
                       expert_groups: Sequence[Sequence[str]], num_classes: int) -> torch.Tensor:
    """(K, C) bool: expert k owns the classes of the groups ``expert_groups[k]``.

    The first expert must own every class: it alone trains the backbone and is the prediction
    of stage 1 and the fallback of the ensembles.
    """
    masks = torch.zeros(len(expert_groups), num_classes, dtype=torch.bool)
    for k, groups in enumerate(expert_groups):
        for group in groups:
            if group not in class_groups:
                raise ValueError(f"expert {k + 1}: unknown class group {group!r} "
                                 f"(the class statistics have {sorted(class_groups)})")
            ids = list(class_groups[group])
            if any(not 0 <= c < num_classes for c in ids):
                raise ValueError(f"class group {group!r} has ids outside 0..{num_classes - 1}")
            masks[k, ids] = True
        if not masks[k].any():
            raise ValueError(f"expert {k + 1} (groups {list(groups)}) owns no class")
    if not masks[0].all():
        missing = torch.nonzero(~masks[0]).flatten().tolist()
        raise ValueError(f"the first expert must own every class; it lacks {missing[:10]}")
    return masks


def mask_logits(logits: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) logits with the classes outside ``member`` (C,) set to the dtype's lowest
    value: their softmax probability is exactly 0 and they get no gradient."""
    shape = (1, -1) + (1,) * (logits.dim() - 2)
    return logits.masked_fill(~member.to(logits.device).view(shape), torch.finfo(logits.dtype).min)


def expert_losses(logits: torch.Tensor, targets: torch.Tensor, member: torch.Tensor,
                  ignore_index: int = 255) -> Tuple[torch.Tensor, torch.Tensor]:
    """(CE, auxiliary L2 + KL) of one expert, both on ``logits`` (N, C, H, W) unmasked at the
    size of ``targets`` (N, H, W). The head computes the auxiliary terms at the logits' own
    resolution instead: ``expert_cross_entropy`` on upsampled logits and
    ``expert_auxiliary_loss`` on the logits with ``labels_at`` their pixels."""
    return (expert_cross_entropy(logits, targets, member, ignore_index),
            expert_auxiliary_loss(logits, targets, member, ignore_index))


def _owned_and_interfering(targets, member, ignore_index):
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
    owned = valid & member[safe_targets]
    return owned, valid & ~owned


@float32_math
def expert_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, member: torch.Tensor,
                         ignore_index: int = 255) -> torch.Tensor:
    """CE of one expert: softmax over its classes S_k (``member``), mean over the pixels labelled
    with a class of S_k; ``logits`` (N, C, H, W) unmasked, at the size of ``targets`` (N, H, W).
    0 (with a graph) when no pixel has a class of S_k."""
    member = member.to(logits.device)
    owned, _ = _owned_and_interfering(targets, member, ignore_index)
    if not owned.any():
        return logits.sum() * 0.0
    ce_targets = torch.where(owned, targets, torch.full_like(targets, ignore_index))
    return F.cross_entropy(mask_logits(logits, member), ce_targets, ignore_index=ignore_index)


@float32_math
def expert_cross_entropy_upsampled(logits: torch.Tensor, targets: torch.Tensor, member: torch.Tensor,
                                   ignore_index: int = 255, sparse: Optional[bool] = None) -> torch.Tensor:
    """``expert_cross_entropy`` of ``logits`` (N, C, h, w) upsampled bilinearly to the size of
    ``targets`` (N, H, W) as ``F.interpolate(..., align_corners=False)`` does, without building the
    upsampled (N, C, H, W) tensor: only the pixels the expert owns and only its classes S_k enter
    its loss, so the loss is computed on those |owned| x |S_k| values alone. Same value and
    gradient up to float rounding; the cost falls with the share of pixels the expert owns (the
    tail expert owns a few per cent of a long-tailed image).

    On the CPU the interpolation is one sparse (|owned|, N h w) matrix of bilinear weights (4 per
    row) times the logits; elsewhere (CUDA, half precision) the expert's classes are upsampled
    densely, which still skips the classes outside S_k. ``sparse`` forces one way (None: as said)."""
    member = member.to(logits.device)
    owned, _ = _owned_and_interfering(targets, member, ignore_index)
    if not owned.any():
        return logits.sum() * 0.0
    index_in_set = torch.cumsum(member.long(), 0) - 1  # class id -> column among S_k
    own_logits = logits[:, member]  # (N, |S|, h, w)
    if sparse is None:
        sparse = logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.float64)
    if sparse:
        n, y, x = owned.nonzero(as_tuple=True)
        weights = bilinear_weights(n, y, x, own_logits.shape, targets.shape[-2:], logits.dtype)
        num_images, set_size, h, w = own_logits.shape
        rows = own_logits.permute(0, 2, 3, 1).reshape(num_images * h * w, set_size)
        values = torch.sparse.mm(weights, rows)  # (|owned|, |S|)
        return F.cross_entropy(values, index_in_set[targets[n, y, x]])
    upsampled = F.interpolate(own_logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    set_targets = torch.where(owned, index_in_set[targets.clamp(0, member.numel() - 1)],
                              torch.full_like(targets, ignore_index))
    return F.cross_entropy(upsampled, set_targets, ignore_index=ignore_index)


def _source_pixels(dst: torch.Tensor, in_size: int, out_size: int, dtype: torch.dtype):
    """The two source pixels and their weights of output pixels ``dst`` in a bilinear resize of
    ``in_size`` to ``out_size`` with half-pixel centres (align_corners=False): source position
    (dst + 0.5) * in / out - 0.5, clamped at 0; the upper neighbour clamped at the border."""
    src = ((dst.to(dtype) + 0.5) * (in_size / out_size) - 0.5).clamp_min(0)
    low = src.long()  # floor: src >= 0
    high = (low + 1).clamp_max(in_size - 1)
    frac = src - low
    return low, high, 1.0 - frac, frac


def bilinear_weights(n: torch.Tensor, y: torch.Tensor, x: torch.Tensor, shape: Sequence[int],
                     size: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sparse (P, N h w) matrix of ``dtype`` whose row p holds the bilinear weights that F.interpolate
    (align_corners=False) gives the (N, ., h, w) input's pixels at output pixel (n_p, y_p, x_p)
    of an output of ``size``; input pixels are numbered (n h + row) w + column."""
    _, _, h, w = shape
    y0, y1, wy0, wy1 = _source_pixels(y, h, size[0], dtype)
    x0, x1, wx0, wx1 = _source_pixels(x, w, size[1], dtype)
    top, bottom = (n * h + y0) * w, (n * h + y1) * w
    columns = torch.stack([top + x0, top + x1, bottom + x0, bottom + x1], dim=1).flatten()
    values = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], dim=1).flatten()
    rows = torch.arange(n.numel(), device=n.device).repeat_interleave(4)
    # The indices are in range by construction; the context only turns off torch's warning
    # that invariant checks are off by default.
    with torch.sparse.check_sparse_tensor_invariants(False):
        return torch.sparse_coo_tensor(torch.stack([rows, columns]), values,
                                       (n.numel(), shape[0] * h * w)).coalesce()


@float32_math
def expert_auxiliary_loss(logits: torch.Tensor, labels: torch.Tensor, member: torch.Tensor,
                          ignore_index: int = 255) -> torch.Tensor:
    """L2 + KL of one expert on ``logits`` z (N, C, h, w) unmasked and ``labels`` y (N, h, w) of
    the same pixels (``labels_at`` samples them at the logits' resolution):

        L2 = mean over interfering pixels i (y_i labelled, y_i not in S_k) of
             (1 / |S_k|) sum_{c in S_k} z_{c,i}^2
        KL = mean over images n with owned pixels (y_i in S_k) of
             sum_{c in S_k} q_nc log(q_nc / pbar_nc),
             q_nc = share of image n's owned pixels labelled c,
             pbar_nc = mean over those pixels of softmax over S_k of z_i, at c

    L2 drives the expert to flat, small logits where the pixel is not its business; KL matches
    its mean prediction to the class distribution it sees. Each term is 0 (with a graph) when it
    has no pixel.
    """
    member = member.to(logits.device)
    owned, interfering = _owned_and_interfering(labels, member, ignore_index)
    zero = logits.sum() * 0.0
    own_logits = logits[:, member]  # (N, |S|, h, w)
    l2 = own_logits.pow(2).mean(dim=1)[interfering].mean() if interfering.any() else zero

    num_images, set_size = own_logits.shape[:2]
    pixels = owned.flatten(1).sum(dim=1)  # (N,)
    present_images = pixels > 0
    if not present_images.any():
        return l2 + zero
    index_in_set = torch.cumsum(member.long(), 0) - 1  # class id -> column of own_logits
    image_of_pixel = torch.arange(num_images, device=labels.device).view(-1, 1, 1).expand_as(labels)
    counts = torch.bincount((image_of_pixel * set_size + index_in_set[labels.clamp(0, member.numel() - 1)])[owned],
                            minlength=num_images * set_size).view(num_images, set_size)
    probs = F.softmax(own_logits, dim=1) * owned[:, None]
    q = counts[present_images].to(probs) / pixels[present_images, None].to(probs)
    p_bar = (probs.flatten(2).sum(dim=2)[present_images]
             / pixels[present_images, None].to(probs)).clamp_min(1e-12)
    kl_terms = torch.where(q > 0, q * (q.clamp_min(1e-12).log() - p_bar.log()), torch.zeros_like(q))
    return l2 + kl_terms.sum(dim=1).mean()


def labels_at(targets: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, h, w): the label of ``targets`` (N, H, W) at the centre of each cell of an h x w grid
    over the image (nearest neighbour with half-pixel centres; for H = s h, the pixel s i + s // 2)."""
    rows = ((torch.arange(size[0], device=targets.device) + 0.5) * (targets.shape[-2] / size[0])).long()
    cols = ((torch.arange(size[1], device=targets.device) + 0.5) * (targets.shape[-1] / size[1])).long()
    return targets.index_select(-2, rows.clamp_max(targets.shape[-2] - 1)).index_select(
        -1, cols.clamp_max(targets.shape[-1] - 1))


def expert_probabilities(expert_logits: Sequence[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """(K, N, C, H, W): each expert's softmax over its own classes (0 elsewhere)."""
    return torch.stack([F.softmax(mask_logits(to_float32(z), m), dim=1) for z, m in zip(expert_logits, masks)])


@float32_math
def expert_log_probabilities(logits: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W): one expert's log-softmax over its own classes, floored at
    ``LOG_PROBABILITY_FLOOR`` (so finite everywhere, also outside its classes)."""
    return F.log_softmax(mask_logits(logits, member), dim=1).clamp_min_(LOG_PROBABILITY_FLOOR)


def most_specific_expert(masks: torch.Tensor) -> torch.Tensor:
    """(C,) the expert with the fewest classes among those owning each class (ties: lowest k)."""
    sizes = masks.sum(dim=1, keepdim=True).float()
    cost = torch.where(masks, sizes, torch.full_like(sizes.expand_as(masks), float("inf")))
    return cost.argmin(dim=0)


def oracle_probabilities(probs: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = 255) -> torch.Tensor:
    """(N, C, H, W): at each pixel the output of the most specific expert owning its label
    (uses the labels: evaluation only). Ignored pixels take the first expert."""
    chooser = most_specific_expert(masks).to(targets.device)
    valid = targets != ignore_index
    chosen = torch.where(valid, chooser[torch.where(valid, targets, torch.zeros_like(targets))],
                         torch.zeros_like(targets))  # (N, H, W)
    index = chosen[None, :, None].expand(1, -1, probs.shape[2], -1, -1)
    return probs.gather(0, index)[0]


def group_average(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per class the mean probability over the experts owning it, renormalised over classes."""
    owners = masks.sum(dim=0).to(probs).view(1, -1, 1, 1)
    averaged = probs.sum(dim=0) / owners
    return averaged / averaged.sum(dim=1, keepdim=True)


def specificity_order(masks: torch.Tensor):
    """Experts from the most specific (fewest classes) to the least (ties: higher k first)."""
    sizes = masks.sum(dim=1).tolist()
    return sorted(range(len(sizes)), key=lambda k: (sizes[k], -k))


def softmax_threshold(probs: torch.Tensor, masks: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Each pixel takes the most specific expert whose top probability is >= ``threshold``;
    the least specific expert (the all-class one) is the fallback."""
    order = specificity_order(masks)
    out = probs[order[-1]].clone()
    decided = torch.zeros_like(out[:, 0], dtype=torch.bool)
    for k in order[:-1]:
        confident = (probs[k].amax(dim=1) >= threshold) & ~decided
        out = torch.where(confident[:, None], probs[k], out)
        decided = decided | confident  # not in place: ONNX has no in-place or
    return out


def argmax_confidence(probs: torch.Tensor) -> torch.Tensor:
    """Each pixel takes the expert with the highest top probability."""
    best = probs.amax(dim=2).argmax(dim=0)  # (N, H, W)
    index = best[None, :, None].expand(1, -1, probs.shape[2], -1, -1)
    return probs.gather(0, index)[0]


class MOEDecisionMaker(nn.Module):
    """Learned ensemble in log space: P = softmax_c(sum_k w_kc * (a_kc * log p_kc + b_kc)), with
    a_kc = exp(log_scale_kc) > 0, b_kc free, w_kc = softmax over the experts owning c of
    ``decision_logits`` (0 for the others). At initialisation (a = 1, b = 0, equal weights) P is
    the normalised geometric mean of the owning experts' probabilities.

    Log space keeps every gradient of the CE bounded. In the linear form P_c proportional to
    sum_k w_kc (a_kc p_kc + b_kc), d(-log P_c)/d b_c ~ 1 / S_c is unbounded where the experts give
    class c a probability near 0: on the synthetic set one step drove a tail class's shift to 34
    and that class was predicted everywhere.
    """

    # A second stage trains this module alone; everything else is frozen (engine/stage2.py).
    trained_in_second_stage = True

    def __init__(self, masks: torch.Tensor):
        super().__init__()
        num_experts, num_classes = masks.shape
        self.register_buffer("masks", masks.clone(), persistent=False)
        self.log_scale = nn.Parameter(torch.zeros(num_experts, num_classes))
        self.shift = nn.Parameter(torch.zeros(num_experts, num_classes))
        self.decision_logits = nn.Parameter(torch.zeros(num_experts, num_classes))

    def decision_weights(self) -> torch.Tensor:
        logits = self.decision_logits.masked_fill(~self.masks, float("-inf"))
        return F.softmax(logits, dim=0)  # (K, C); 0 for experts not owning the class

    def forward(self, expert_log_probs: Iterable[torch.Tensor]) -> torch.Tensor:
        """P (N, C, H, W), the softmax over classes of :meth:`scores` (inference)."""
        return F.softmax(self.scores(expert_log_probs), dim=1)

    def log_probabilities(self, expert_log_probs: Iterable[torch.Tensor]) -> torch.Tensor:
        """log P (N, C, H, W), the log-softmax of :meth:`scores`: what the CE of stage 2 reads,
        exact where P underflows (no clamp, so no pixel loses its gradient)."""
        return F.log_softmax(self.scores(expert_log_probs), dim=1)

    def scores(self, expert_log_probs: Iterable[torch.Tensor]) -> torch.Tensor:
        """The class scores (N, C, H, W) from the K experts' log-probabilities (N, C, H, W) each, in expert order
        (any iterable, e.g. a generator, so that inference holds one expert's output at a time;
        or a (K, N, C, H, W) tensor). They must be finite (``expert_log_probabilities`` floors
        them); values outside an expert's classes are ignored (their weight is 0).

        The scores are one weighted sum: sum_k (w_kc a_kc) log p_kc + sum_k w_kc b_kc, the second
        term a constant per class, so no expert-sized temporary is built besides the running sum.
        """
        weights = self.decision_weights()
        coefficients = weights * self.log_scale.exp()  # (K, C), 0 where the expert lacks the class
        bias = (weights * self.shift).sum(dim=0)  # (C,)
        num_experts = self.masks.shape[0]
        scores, count = None, 0
        for log_p in expert_log_probs:
            log_p = to_float32(log_p)  # the sum of K log-probabilities in float32 (precision.py)
            if count == num_experts:
                raise ValueError(f"the decision-maker has {num_experts} experts; got more outputs")
            shape = (1, -1) + (1,) * (log_p.dim() - 2)
            if scores is None:
                scores = torch.addcmul(bias.view(shape), log_p, coefficients[count].view(shape))
            else:  # in place: addcmul's backward does not read its input
                scores.addcmul_(log_p, coefficients[count].view(shape))
            count += 1
        if count != num_experts:
            raise ValueError(f"the decision-maker has {num_experts} experts; got {count} outputs")
        return scores


@float32_math
def moe_losses(log_probs: torch.Tensor, targets: torch.Tensor, tail: torch.Tensor,
               ignore_index: int = 255) -> Tuple[torch.Tensor, torch.Tensor]:
    """(CE, tail over-confidence penalty) of the ensemble's log-probabilities ``log_probs``
    (N, C, H, W), ``MOEDecisionMaker.log_probabilities``.

    CE = -log P_y read from the log-softmax itself: exact and with its gradient (P_y - 1 in the
    scores) at any P_y, also where P_y underflows float32 (a clamp of P at 1e-8 would make the
    loss flat, gradient 0, at the pixels the ensemble gets most wrong). The penalty is the mean,
    over labelled pixels whose class is not a tail class, of the probability the ensemble gives
    to the tail classes (``tail``: (C,) bool).
    """
    tail = tail.to(log_probs.device)
    valid = targets != ignore_index
    zero = log_probs.sum() * 0.0
    if not valid.any():
        return zero, zero
    ce = F.nll_loss(log_probs, targets, ignore_index=ignore_index)
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
    not_tail = valid & ~tail[safe_targets]
    if not (not_tail.any() and tail.any()):
        return ce, zero
    tail_mass = torch.logsumexp(log_probs[:, tail], dim=1).exp()  # (N, H, W)
    return ce, tail_mass[not_tail].mean()
