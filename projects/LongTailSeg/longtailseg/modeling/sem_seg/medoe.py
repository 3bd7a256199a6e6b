"""MEDOE head: K experts (any registered long-tail head) on one backbone, and their ensemble.

The math (label masking, expert losses, oracle, ensembles, the MOE decision-maker) is in
``longtailseg.longtail.experts``; this module builds the experts from the config and wires
stage 1 (MED) and stage 2 (MOE) into Detectron2's SemanticSegmentor.
"""
import logging
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ...data.class_counting import class_stats_from_config
from ...errors import ConfigError
from ...longtail.experts import (
    ENSEMBLES,
    MOEDecisionMaker,
    argmax_confidence,
    expert_class_masks,
    expert_log_probabilities,
    expert_losses,
    expert_probabilities,
    group_average,
    mask_logits,
    moe_losses,
    oracle_probabilities,
    softmax_threshold,
)

logger = logging.getLogger(__name__)


@SEM_SEG_HEADS_REGISTRY.register()
class MEDOEHead(nn.Module):
    """Multi-expert decoder (stage 1) and output ensemble (stage 2).

    Each expert is a whole registered head (context module + classifier) built from the same
    config; its contract is ``decode(features)`` -> feature map, ``classify(feature)`` ->
    logits, ``logits_stride``. Stage 1 trains every expert on its masked labels; only expert
    1 receives the backbone's features with their graph, the others read detached copies. With
    ``ensemble == "MOE"`` the head is in stage 2: the experts are frozen (as every stage 2
    freezes, see ``engine/stage2.py``) and only the decision-maker is trained. At inference the head returns class probabilities:
    expert 1's (``"none"``), an ensemble's, or the oracle's (labels needed).
    """

    @configurable
    def __init__(self, *, experts: List[nn.Module], expert_masks: torch.Tensor,
                 tail_classes: torch.Tensor, ignore_value: int = 255, aux_loss_weight: float = 0.2,
                 ensemble: str = "none", softmax_threshold: float = 0.3,
                 tail_penalty_weight: float = 0.1, oracle: bool = False, loss_weight: float = 1.0):
        super().__init__()
        if ensemble not in ENSEMBLES:
            raise ConfigError(f"MODEL.MEDOE.ENSEMBLE={ensemble!r}; use one of {list(ENSEMBLES)}")
        if len(experts) != expert_masks.shape[0]:
            raise ConfigError(f"{len(experts)} experts but {expert_masks.shape[0]} class sets")
        self.experts = nn.ModuleList(experts)
        self.register_buffer("expert_masks", expert_masks.clone(), persistent=False)
        self.register_buffer("tail_classes", tail_classes.clone(), persistent=False)
        self.ignore_value = ignore_value
        self.aux_loss_weight = aux_loss_weight
        self.ensemble = ensemble
        self.softmax_threshold = softmax_threshold
        self.tail_penalty_weight = tail_penalty_weight
        self.oracle = oracle
        self.loss_weight = loss_weight
        self.decision_maker = MOEDecisionMaker(expert_masks) if ensemble == "MOE" else None

    @classmethod
    def from_config(cls, cfg, input_shape):
        medoe = cfg.MODEL.MEDOE
        long_tail = cfg.MODEL.LONG_TAIL
        if medoe.EXPERT_HEAD == cls.__name__:
            raise ConfigError("MODEL.MEDOE.EXPERT_HEAD must name an expert head, e.g. "
                              "LongTailDeepLabV3PlusHead, not MEDOEHead")
        if (long_tail.DISALIGN.ENABLED or long_tail.BLV.ENABLED or long_tail.GRW.ENABLED
                or long_tail.LOSS.NAME != "CE"):
            raise ConfigError(
                "MEDOEHead trains its experts with their own loss (CE + MODEL.MEDOE.AUX_LOSS_WEIGHT "
                "x (L2 + KL)); leave MODEL.LONG_TAIL.{LOSS.NAME, BLV, GRW, DISALIGN} at their defaults"
            )
        try:
            head_class = SEM_SEG_HEADS_REGISTRY.get(medoe.EXPERT_HEAD)
        except KeyError:
            raise ConfigError(f"MODEL.MEDOE.EXPERT_HEAD={medoe.EXPERT_HEAD!r} is not a registered "
                              "semantic-segmentation head") from None
        stats = class_stats_from_config(cfg)
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        expert_groups = [groups.split("+") for groups in medoe.EXPERT_CLASS_GROUPS]
        try:
            masks = expert_class_masks(stats.groups, expert_groups, num_classes)
        except ValueError as e:
            raise ConfigError(f"MODEL.MEDOE.EXPERT_CLASS_GROUPS: {e}") from None
        tail = torch.zeros(num_classes, dtype=torch.bool)
        tail[list(stats.groups.get("tail", []))] = True
        experts = [head_class(cfg, input_shape) for _ in expert_groups]
        for expert in experts:
            if not all(hasattr(expert, a) for a in ("decode", "classify", "logits_stride")):
                raise ConfigError(f"MODEL.MEDOE.EXPERT_HEAD={medoe.EXPERT_HEAD!r} has no "
                                  "decode / classify / logits_stride; use a LongTailSeg head")
        logger.info("MEDOE experts (%s): %s", medoe.EXPERT_HEAD, ", ".join(
            f"{k + 1}: {'+'.join(g)} ({int(m.sum())} classes, "
            f"{sum(p.numel() for p in e.parameters())} parameters)"
            for k, (g, m, e) in enumerate(zip(expert_groups, masks, experts))))
        return {
            "experts": experts,
            "expert_masks": masks,
            "tail_classes": tail,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "aux_loss_weight": medoe.AUX_LOSS_WEIGHT,
            "ensemble": medoe.ENSEMBLE,
            "softmax_threshold": medoe.SOFTMAX_THRESHOLD,
            "tail_penalty_weight": medoe.TAIL_PENALTY_WEIGHT,
            "oracle": medoe.ORACLE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
        }

    @property
    def is_stage2(self):
        return self.decision_maker is not None

    def expert_logits(self, features, size=None):
        """Each expert's logits (unmasked) at ``size``, or at its stride x the feature size."""
        return list(self.iter_expert_logits(features, size))

    def iter_expert_logits(self, features, size=None, count=None):
        """The logits of the first ``count`` experts (default all), one at a time, so that a
        consumer that reduces them need not hold them all."""
        for k, expert in enumerate(self.experts[:count]):
            inputs = features if k == 0 else {name: f.detach() for name, f in features.items()}
            logits = expert.classify(expert.decode(inputs))
            target_size = size or tuple(s * expert.logits_stride for s in logits.shape[-2:])
            yield F.interpolate(logits, size=target_size, mode="bilinear", align_corners=False)

    def expert_log_probabilities(self, features, size=None):
        """Each expert's floored log-softmax over its classes, one at a time (what MOE reads)."""
        for logits, member in zip(self.iter_expert_logits(features, size), self.expert_masks):
            yield expert_log_probabilities(logits, member)

    def forward(self, features, targets=None):
        size = targets.shape[-2:] if targets is not None else None
        if self.training:
            if self.is_stage2:
                with torch.no_grad():
                    log_probs = list(self.expert_log_probabilities(features, size))
                return None, self.moe_losses(log_probs, targets)
            return None, self.expert_losses(self.expert_logits(features, size), targets)
        if self.oracle:
            if targets is None:
                raise ConfigError("MODEL.MEDOE.ORACLE needs the test labels; evaluate a dataset "
                                  "with sem_seg_file_name (tools/train_net.py --eval-only loads them)")
            probs = expert_probabilities(self.expert_logits(features, size), self.expert_masks)
            return oracle_probabilities(probs, self.expert_masks, targets, self.ignore_value), {}
        return self.predict(features, size), {}

    def predict(self, features, size=None):
        """Class probabilities of the configured ensemble, running only the experts it reads:
        expert 1 alone for ``"none"``; MOE reduces the experts one at a time."""
        if self.ensemble == "none":
            (logits,) = self.iter_expert_logits(features, size, count=1)
            return F.softmax(mask_logits(logits, self.expert_masks[0]), dim=1)
        if self.ensemble == "MOE":
            return self.decision_maker(self.expert_log_probabilities(features, size))
        probs = expert_probabilities(self.expert_logits(features, size), self.expert_masks)
        if self.ensemble == "softmax_threshold":
            return softmax_threshold(probs, self.expert_masks, self.softmax_threshold)
        if self.ensemble == "argmax_confidence":
            return argmax_confidence(probs)
        return group_average(probs, self.expert_masks)

    def expert_losses(self, expert_logits, targets):
        losses = {}
        for k, (logits, mask) in enumerate(zip(expert_logits, self.expert_masks)):
            ce, aux = expert_losses(logits, targets, mask, self.ignore_value)
            losses[f"loss_sem_seg_expert{k + 1}"] = ce * self.loss_weight
            losses[f"loss_aux_expert{k + 1}"] = aux * self.aux_loss_weight * self.loss_weight
        return losses

    def moe_losses(self, expert_log_probs, targets):
        ce, penalty = moe_losses(self.decision_maker(expert_log_probs), targets, self.tail_classes,
                                   self.ignore_value)
        return {"loss_sem_seg_moe": ce * self.loss_weight,
                "loss_tail_penalty": penalty * self.tail_penalty_weight * self.loss_weight}
