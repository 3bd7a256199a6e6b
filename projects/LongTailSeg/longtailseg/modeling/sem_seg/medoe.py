"""MEDOE head: K experts (any registered long-tail head) on one backbone, and their ensemble.

The math (label masking, expert losses, oracle, ensembles, the MOE decision-maker) is in
``longtailseg.longtail.experts``; this module builds the experts from the config and wires
stage 1 (MED) and stage 2 (MOE) into Detectron2's SemanticSegmentor.
"""
import logging
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ...config import class_stats_from_config
from ...errors import ConfigError
from ...longtail.experts import (
    ENSEMBLES,
    MOEDecisionMaker,
    argmax_confidence,
    expert_auxiliary_loss,
    expert_class_masks,
    expert_cross_entropy,
    expert_cross_entropy_upsampled,
    expert_log_probabilities,
    expert_probabilities,
    group_average,
    labels_at,
    moe_losses,
    oracle_probabilities,
    softmax_threshold,
)
from ..extension_points import LongTailPart, SecondStage
from .expert import missing_expert_methods

logger = logging.getLogger(__name__)


def check_expert_channels(width):
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ConfigError(f"MODEL.MEDOE.EXPERT_CHANNELS={width!r}; use a whole number of channels "
                          ">= 1 for experts 2..K, or 0 for the head's width")


def check_ensemble(ensemble):
    if ensemble not in ENSEMBLES:
        raise ConfigError(f"MODEL.MEDOE.ENSEMBLE={ensemble!r}; use one of {list(ENSEMBLES)}")


def expert_head_class(cfg):
    """The registered head MODEL.MEDOE.EXPERT_HEAD names, refused unless it implements the
    :class:`~.expert.MEDOEExpert` interface."""
    name = cfg.MODEL.MEDOE.EXPERT_HEAD
    if name not in SEM_SEG_HEADS_REGISTRY:
        raise ConfigError(f"MODEL.MEDOE.EXPERT_HEAD={name!r} is not a registered "
                          "semantic-segmentation head")
    head_class = SEM_SEG_HEADS_REGISTRY.get(name)
    missing = missing_expert_methods(head_class)
    if missing:
        raise ConfigError(
            f"MODEL.MEDOE.EXPERT_HEAD={name!r} cannot serve as a MEDOE expert (missing: "
            f"{', '.join(missing)}); use a head that subclasses "
            "longtailseg.modeling.sem_seg.expert.MEDOEExpert, e.g. LongTailDeepLabV3PlusHead"
        )
    return head_class


def expert_config(cfg, head_class):
    """The config experts 2..K are built from: the head narrowed to ``MODEL.MEDOE.EXPERT_CHANNELS``
    channels by its own ``narrow_config``, or ``cfg`` itself for 0 (the head's width)."""
    width = cfg.MODEL.MEDOE.EXPERT_CHANNELS
    check_expert_channels(width)
    return cfg if width == 0 else head_class.narrow_config(cfg, width)


def check_experts_own_two_classes(masks, expert_groups, stats, cfg):
    """Refuse an expert that owns fewer than two classes: its softmax over them is 1 at every
    pixel, so its CE and KL are 0 (it learns nothing) and the softmax-threshold and
    argmax-confidence ensembles, where it is always fully confident, predict its class at every
    pixel. The groups come from the dataset's thresholds, which the message names."""
    for k, (groups, member) in enumerate(zip(expert_groups, masks)):
        owned = torch.nonzero(member).flatten().tolist()
        if len(owned) >= 2:
            continue
        names = ", ".join(stats.class_names[c] for c in owned) or "none"
        sizes = " / ".join(str(len(stats.groups.get(g, []))) for g in ("head", "body", "tail"))
        long_tail = cfg.MODEL.LONG_TAIL
        raise ConfigError(
            f"MEDOE expert {k + 1} ({'+'.join(groups)}) owns {len(owned)} class ({names}), but an "
            f"expert needs at least 2 (with one its softmax is 1 everywhere: no loss, and the "
            f"ensembles predict that class everywhere); head / body / tail are {sizes} classes at "
            f"{stats.group_rule or 'the statistics file'}: change MODEL.LONG_TAIL.HEAD_RATIO "
            f"({long_tail.HEAD_RATIO:g}) / TAIL_RATIO ({long_tail.TAIL_RATIO:g}) so that every group "
            f"has 2 or more classes (a MODEL.LONG_TAIL.CLASS_STATS file given by hand keeps its "
            "groups: regenerate it with tools/compute_class_stats.py --head-ratio / --tail-ratio)")


def shared_context_classifier(expert):
    """One of MCN's further classifiers (MEDOE's Table 5: a shared backbone and context module,
    then one classifier per class group): a new 1x1 conv like ``expert.predictor`` (initialised
    as the heads' own, normal std 0.001 and bias 0), after the same dropout where the head has one."""
    predictor = getattr(expert, "predictor", None)
    if not isinstance(predictor, nn.Conv2d):
        raise ConfigError(f"MODEL.MEDOE.SHARED_CONTEXT needs an expert head whose classifier is a "
                          f"convolution `predictor`; {type(expert).__name__} has none: set it False")
    conv = nn.Conv2d(predictor.in_channels, predictor.out_channels, predictor.kernel_size,
                     padding=predictor.padding)
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.zeros_(conv.bias)
    dropout = getattr(expert, "dropout", None)
    return nn.Sequential(type(dropout)(dropout.p), conv) if isinstance(dropout, nn.Dropout2d) else conv


@SEM_SEG_HEADS_REGISTRY.register()
class MEDOEHead(nn.Module, LongTailPart):
    """Multi-expert decoder (stage 1) and output ensemble (stage 2).

    Each expert is a registered head implementing :class:`~.expert.MEDOEExpert` (context module +
    classifier). Expert 1 is the config's head at its own width; experts 2..K are the same head
    narrowed to ``MODEL.MEDOE.EXPERT_CHANNELS`` by its ``narrow_config``. The experts share the
    backbone features and, for a head with ``shares_projection`` (DeepLabV3+: the low-level
    features' 1x1 projections), expert 1's projection: the other experts hold none. Stage 1 trains every expert on its masked labels; only expert 1 receives
    the backbone's features (and the projection's output) with their graph, the others read
    detached copies. With ``ensemble == "MOE"`` the head is in stage 2: the experts are frozen
    (as every stage 2 freezes, see ``engine/stage2.py``) and only the decision-maker is trained.
    At inference the head returns class probabilities: expert 1's (``"none"``), an ensemble's,
    or the oracle's (labels needed).
    """

    @configurable
    def __init__(self, *, experts: List[nn.Module], expert_masks: torch.Tensor,
                 tail_classes: torch.Tensor, ignore_value: int = 255, aux_loss_weight: float = 0.2,
                 ensemble: str = "none", softmax_threshold: float = 0.3,
                 tail_penalty_weight: float = 0.1, oracle: bool = False, loss_weight: float = 1.0,
                 classifiers: Optional[List[nn.Module]] = None):
        """``classifiers``: MCN (``MODEL.MEDOE.SHARED_CONTEXT``): one expert, whose context module
        is shared, and these K - 1 further classifiers on its decoded features."""
        super().__init__()
        check_ensemble(ensemble)
        num_outputs = len(experts) + len(classifiers or [])
        if num_outputs != expert_masks.shape[0]:
            raise ConfigError(f"{num_outputs} experts but {expert_masks.shape[0]} class sets")
        self.experts = nn.ModuleList(experts)
        self.classifiers = nn.ModuleList(classifiers) if classifiers else None
        # The first expert's projection of the backbone features serves every expert.
        self.shares_projection = all(e.shares_projection for e in experts)
        if self.shares_projection:
            for expert in experts[1:]:
                expert.drop_projection()
        logger.info("MEDOE parameters: %s%s", ", ".join(
            f"expert {k + 1} {sum(p.numel() for p in e.parameters())}"
            for k, e in enumerate(list(experts) + list(classifiers or []))),
            " (the projection of the backbone features is expert 1's, shared)"
            if self.shares_projection and not classifiers else
            " (MCN: experts 2..K are classifiers on expert 1's context module)" if classifiers else "")
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
    def check_config(cls, cfg):
        medoe = cfg.MODEL.MEDOE
        long_tail = cfg.MODEL.LONG_TAIL
        check_expert_channels(medoe.EXPERT_CHANNELS)
        check_ensemble(medoe.ENSEMBLE)
        if medoe.EXPERT_HEAD == cls.__name__:
            raise ConfigError("MODEL.MEDOE.EXPERT_HEAD must name an expert head, e.g. "
                              "LongTailDeepLabV3PlusHead, not MEDOEHead")
        if (long_tail.DISALIGN.ENABLED or long_tail.BLV.ENABLED or long_tail.GRW.ENABLED
                or long_tail.LOSS.NAME != "CE"):
            raise ConfigError(
                "MEDOEHead trains its experts with their own loss (CE + MODEL.MEDOE.AUX_LOSS_WEIGHT "
                "x (L2 + KL)); leave MODEL.LONG_TAIL.{LOSS.NAME, BLV, GRW, DISALIGN} at their defaults"
            )
        expert_head_class(cfg)

    @classmethod
    def needs_class_stats(cls, cfg):
        return True  # the experts' class groups

    @classmethod
    def second_stage(cls, cfg):
        medoe = cfg.MODEL.MEDOE
        return SecondStage("MEDOE's MOE ensemble", medoe.STAGE1_CONFIG) if medoe.ENSEMBLE == "MOE" else None

    @classmethod
    def needs_test_labels(cls, cfg):
        return cfg.MODEL.MEDOE.ORACLE

    @classmethod
    def from_config(cls, cfg, input_shape):
        cls.check_config(cfg)
        medoe = cfg.MODEL.MEDOE
        head_class = expert_head_class(cfg)
        stats = class_stats_from_config(cfg)
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        expert_groups = [groups.split("+") for groups in medoe.EXPERT_CLASS_GROUPS]
        try:
            masks = expert_class_masks(stats.groups, expert_groups, num_classes)
        except ValueError as e:
            raise ConfigError(f"MODEL.MEDOE.EXPERT_CLASS_GROUPS: {e}") from None
        check_experts_own_two_classes(masks, expert_groups, stats, cfg)
        tail = torch.zeros(num_classes, dtype=torch.bool)
        tail[list(stats.groups.get("tail", []))] = True
        classifiers = None
        if medoe.SHARED_CONTEXT:  # MCN: one context module, K classifiers
            experts = [head_class(cfg, input_shape)]
            classifiers = [shared_context_classifier(experts[0]) for _ in expert_groups[1:]]
        else:
            narrow_cfg = expert_config(cfg, head_class)
            experts = [head_class(cfg if k == 0 else narrow_cfg, input_shape)
                       for k in range(len(expert_groups))]
        logger.info("MEDOE experts (%s): %s", medoe.EXPERT_HEAD, ", ".join(
            f"{k + 1}: {'+'.join(g)} ({int(m.sum())} classes)"
            for k, (g, m) in enumerate(zip(expert_groups, masks))))
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
            "classifiers": classifiers,
        }

    @property
    def is_stage2(self):
        return self.decision_maker is not None

    @property
    def num_experts(self):
        """K: the experts (MCN: the classifiers) whose outputs the ensembles combine."""
        return self.expert_masks.shape[0]

    def expert_logits(self, features, size=None):
        """Each expert's logits (unmasked) at ``size``, or at its stride x the feature size."""
        return list(self.iter_expert_logits(features, size))

    def iter_decoder_logits(self, features, count=None):
        """(expert, its logits at its own resolution) for the first ``count`` experts (default
        all), one at a time. Experts 2..K read detached features and projections; MCN's
        classifiers 2..K read expert 1's decoded features with their graph (the context module
        and backbone are shared and trained by every classifier), and yield expert 1 as theirs."""
        projected = self.experts[0].project(features) if self.shares_projection else None
        if self.classifiers is not None:
            head = self.experts[0]
            decoded = head.decode(features, projected)
            yield head, head.classify(decoded)
            for classifier in self.classifiers[:None if count is None else count - 1]:
                yield head, classifier(decoded)
            return
        detached = detached_projected = None
        for k, expert in enumerate(self.experts[:count]):
            if k == 0:
                inputs, skips = features, projected
            else:
                if detached is None:
                    detached = {name: f.detach() for name, f in features.items()}
                    if projected is not None:
                        detached_projected = {name: f.detach() for name, f in projected.items()}
                inputs, skips = detached, detached_projected
            decoded = expert.decode(inputs, skips)
            yield expert, expert.classify(decoded)

    def iter_expert_logits(self, features, size=None, count=None):
        """The logits of the first ``count`` experts (default all) at ``size`` (else the
        expert's stride x its logits' size), one at a time, so that a consumer that reduces them
        need not hold them all."""
        for expert, logits in self.iter_decoder_logits(features, count):
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
            return None, self.expert_losses(features, targets)
        if self.oracle:
            if targets is None:
                raise ConfigError("MODEL.MEDOE.ORACLE needs the test labels; evaluate a dataset "
                                  "with sem_seg_file_name (tools/train_net.py --eval-only loads them)")
            probs = expert_probabilities(self.expert_logits(features, size), self.expert_masks)
            return oracle_probabilities(probs, self.expert_masks, targets, self.ignore_value), {}
        return self.predict(features, size), {}

    def predict(self, features, size=None):
        """Class scores of the configured ensemble, running only the experts it reads: for
        ``"none"`` expert 1's logits, as the single-head model returns them (expert 1 owns every
        class, so its softmax would change no argmax and cost 10 % of an inference at 512 px);
        the ensembles return probabilities, MOE reducing the experts one at a time."""
        if self.ensemble == "none":
            (logits,) = self.iter_expert_logits(features, size, count=1)
            return logits
        if self.ensemble == "MOE":
            return self.decision_maker(self.expert_log_probabilities(features, size))
        probs = expert_probabilities(self.expert_logits(features, size), self.expert_masks)
        if self.ensemble == "softmax_threshold":
            return softmax_threshold(probs, self.expert_masks, self.softmax_threshold)
        if self.ensemble == "argmax_confidence":
            return argmax_confidence(probs)
        return group_average(probs, self.expert_masks)

    def expert_losses(self, features, targets):
        """Per expert: CE on its logits upsampled to the labels' size (as the CE baseline's;
        experts 2..K without the full-size tensor, ``expert_cross_entropy_upsampled``);
        L2 + KL on its logits at their own resolution against the labels at those pixels
        (``labels_at``), where they cost 1 / stride^2 of the full-size terms."""
        losses, labels = {}, {}
        for k, ((_, logits), mask) in enumerate(zip(self.iter_decoder_logits(features),
                                                     self.expert_masks)):
            if bool(mask.all()):  # expert 1: the CE baseline's loss, computed as it is
                upsampled = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear",
                                          align_corners=False)
                ce = expert_cross_entropy(upsampled, targets, mask, self.ignore_value)
            else:
                ce = expert_cross_entropy_upsampled(logits, targets, mask, self.ignore_value)
            size = tuple(logits.shape[-2:])
            if size not in labels:
                labels[size] = labels_at(targets, size)
            aux = expert_auxiliary_loss(logits, labels[size], mask, self.ignore_value)
            losses[f"loss_sem_seg_expert{k + 1}"] = ce * self.loss_weight
            losses[f"loss_aux_expert{k + 1}"] = aux * self.aux_loss_weight * self.loss_weight
        return losses

    def moe_losses(self, expert_log_probs, targets):
        ce, penalty = moe_losses(self.decision_maker.log_probabilities(expert_log_probs), targets,
                                 self.tail_classes, self.ignore_value)
        return {"loss_sem_seg_moe": ce * self.loss_weight,
                "loss_tail_penalty": penalty * self.tail_penalty_weight * self.loss_weight}
