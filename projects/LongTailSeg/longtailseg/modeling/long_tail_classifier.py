"""The long-tail policy around a classifier's logits, written once for pixels and for boxes.

:class:`LongTailClassifier` holds what MODEL.LONG_TAIL configures: BLV in training, DisAlign
calibration, GRW class weights and the loss of the registry. The semantic-segmentation heads
(logits (N, C, H, W)) and the box predictor (logits (R, K + 1), background last) each hold one
by composition and call ``calibrate`` on their logits and ``loss`` on them in training. The math
is in ``longtailseg.longtail``; this module only reads the config and the class statistics.

For boxes (``background_column=True``) the choices are the DisAlign authors' detection ones:
only the K foreground logits are calibrated and varied, GRW weights the K foreground classes
(background weight 1), and count-based losses get a background count from the sampler's
positive fraction.

Boxes may also be scored with sigmoids (Detectron2 main's keys, on v0.6 as well):
``MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE`` trains one binary CE per foreground class (the background
logit unused) and scores boxes by the sigmoids of their foreground logits; ``USE_FED_LOSS`` keeps
only the federated classes' terms (image counts of the class statistics to the power
``FED_LOSS_FREQ_WEIGHT_POWER``); a registered loss declaring ``sigmoid_scores`` (EQLv2) scores the
same way. With sigmoid scores the policy composes as with softmax: the cosine classifier's and
BLV's foreground logits go into the sigmoids, GRW weights each box's loss by its class's weight
(background 1), and **DisAlign's calibration of sigmoid scores** is the same per-class affine,
confidence-blended map of each foreground logit, applied before its sigmoid (so it calibrates
each class's binary score; stage 2 trains it with the stage-1 sigmoid, or federated, loss).
NorCal (``MODEL.ROI_BOX_HEAD.NORCAL``, post-hoc, inference only) renormalises softmax scores
against background and is refused with sigmoid scores, which have no background to renormalise
against.
"""
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable

from ..config import class_stats_from_config, long_tail_needs_class_counts
from ..errors import ClassStatsError, ConfigError
from ..longtail.calibration import DisAlignCalibration, generalized_reweighting, normalised_calibration
from ..longtail.class_stats import positive_counts
from ..longtail.losses import (LOSS_REGISTRY, SigmoidCrossEntropyLoss, build_loss, loss_class,
                               loss_needs_class_counts, loss_options)
from ..longtail.precision import float32_math
from ..longtail.variation import BLV_DISTRIBUTIONS, LogitVariation
from .extension_points import LongTailPart, SecondStage


def check_blv_sigma(long_tail_cfg):
    if long_tail_cfg.BLV.ENABLED and long_tail_cfg.BLV.SIGMA < 0:
        raise ConfigError(f"MODEL.LONG_TAIL.BLV.SIGMA is {long_tail_cfg.BLV.SIGMA}; BLV's sigma must "
                          "be >= 0 (the authors use 4.0)")
    if long_tail_cfg.BLV.ENABLED and long_tail_cfg.BLV.DISTRIBUTION not in BLV_DISTRIBUTIONS:
        raise ConfigError(f"MODEL.LONG_TAIL.BLV.DISTRIBUTION is {long_tail_cfg.BLV.DISTRIBUTION!r}; use one "
                          f"of {', '.join(BLV_DISTRIBUTIONS)}")


def check_box_classifier_loss(name):
    """Refuse a loss that declares a problem with the K + 1-way box classifier (background is
    by far its most frequent class), naming the losses that declare none."""
    problem = loss_class(name).box_classifier_problem
    if problem:
        suited = [n for n, c in LOSS_REGISTRY if not c.box_classifier_problem]
        raise ConfigError(
            f"MODEL.LONG_TAIL.LOSS.NAME: {name} is not used for the K + 1-way box classifier "
            f"because {problem}; choose one of {', '.join(suited)} "
            "(and MODEL.LONG_TAIL.GRW for foreground class weights)"
        )


def check_box_scoring_config(cfg):
    """Refuse, in one line naming the keys, the combinations of the box classifier's scoring keys
    that have no meaning: the federated loss without sigmoid scores, a softmax loss of the
    registry under USE_SIGMOID_CE, NorCal (a softmax renormalisation) with sigmoid scores."""
    box_head = cfg.MODEL.ROI_BOX_HEAD
    name = cfg.MODEL.LONG_TAIL.LOSS.NAME
    sigmoid_loss = loss_class(name).sigmoid_scores
    if box_head.USE_SIGMOID_CE and name != "CE" and not sigmoid_loss:
        sigmoid_names = [n for n, c in LOSS_REGISTRY if c.sigmoid_scores]
        raise ConfigError(
            f"MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE is True but MODEL.LONG_TAIL.LOSS.NAME {name} is a "
            f"softmax loss; set LOSS.NAME to CE (sigmoid CE) or {', '.join(sigmoid_names)}, or "
            "USE_SIGMOID_CE to False")
    sigmoid = box_head.USE_SIGMOID_CE or sigmoid_loss
    if box_head.USE_FED_LOSS and not sigmoid:
        raise ConfigError(
            "MODEL.ROI_BOX_HEAD.USE_FED_LOSS needs sigmoid scores: set MODEL.ROI_BOX_HEAD."
            "USE_SIGMOID_CE to True (the federated loss is a sum of per-class binary losses)")
    if box_head.USE_FED_LOSS and box_head.FED_LOSS_NUM_CLASSES < 1:
        raise ConfigError(f"MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES is {box_head.FED_LOSS_NUM_CLASSES}; "
                          "it must be >= 1 (Detectron2 main: 50)")
    if box_head.NORCAL.ENABLED and sigmoid:
        raise ConfigError(
            "MODEL.ROI_BOX_HEAD.NORCAL.ENABLED renormalises softmax scores against background, but "
            "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE or MODEL.LONG_TAIL.LOSS.NAME "
            f"{name} scores with sigmoids; disable one of them")


def check_pixel_classifier_loss(name):
    """Refuse a loss that only exists for a K + 1-way box classifier (EQLv2)."""
    if loss_class(name).needs_background_column:
        raise ConfigError(f"MODEL.LONG_TAIL.LOSS.NAME: {name} is a loss of the K + 1-way box "
                          "classifier (its last column background) and cannot train a "
                          "semantic-segmentation head; choose another loss")


def counts_with_background(class_counts, positive_fraction):
    """K foreground instance counts plus a background count for count-based losses (BMS, LA,
    LDAM) on K + 1 columns: the background share of the sampled boxes is 1 - positive_fraction
    when images have enough proposals, so background counts sum(n) (1 - f) / f."""
    total = float(sum(class_counts))
    return list(class_counts) + [total * (1.0 - positive_fraction) / positive_fraction]


class LongTailClassifier(nn.Module):
    """BLV, DisAlign, GRW and the loss for one classifier's logits.

    Args:
        num_classes: classes the policy acts on: C for pixels, K foreground classes for boxes.
        feature_channels: channels of the feature the classifier reads (DisAlign's confidence).
        spatial: True for pixel logits (N, C, H, W), False for box logits (R, K + 1).
        background_column: the logits hold a last background column that the policy leaves
            alone (box classifiers); its GRW weight is 1.
        class_counts: training counts of the ``num_classes`` classes (BLV and GRW need them).
        blv_sigma: BLV's sigma, or None for no BLV.
        blv_distribution: BLV's noise law (``longtail.variation.BLV_DISTRIBUTIONS``).
        grw_rho: GRW's rho, or None for no class weights.
        disalign: add DisAlign's calibration (stage 2 trains only it).
        confidence_init_std: std of the calibration's confidence layer init.
        loss: a loss of ``longtailseg.longtail.losses`` for the logits' columns; default CE.
        ignore_value: the label of ignored elements (pixels; boxes have none: -1).
        norcal_gamma: NorCal's gamma for the test-time box scores (``probabilities``), or None.
    """

    @configurable
    def __init__(self, num_classes, feature_channels, *, spatial, background_column=False,
                 class_counts=None, blv_sigma=None, grw_rho=None, disalign=False,
                 confidence_init_std=0.01, loss=None, ignore_value=255, blv_distribution="gaussian",
                 norcal_gamma=None):
        super().__init__()
        if (blv_sigma is not None or grw_rho is not None or norcal_gamma is not None) and class_counts is None:
            raise ValueError("BLV, GRW and NorCal need the class counts")
        self.num_classes = num_classes
        self.background_column = background_column
        self.variation = (LogitVariation(class_counts, blv_sigma, distribution=blv_distribution)
                          if blv_sigma is not None else None)
        weights = None
        if grw_rho is not None:
            weights = generalized_reweighting(class_counts, grw_rho)
            if background_column:
                weights = torch.cat([weights, torch.ones(1)])
        # Derived from the class statistics, so not saved in checkpoints.
        self.register_buffer("class_weights", weights, persistent=False)
        self.calibration = (
            DisAlignCalibration(num_classes, feature_channels, spatial=spatial,
                                confidence_init_std=confidence_init_std)
            if disalign else None
        )
        # A submodule, so that its class-count buffers follow the classifier's device.
        self.loss_fn = loss if loss is not None else build_loss("CE", ignore_index=ignore_value)
        self.norcal_gamma = norcal_gamma
        if norcal_gamma is not None and self.loss_fn.sigmoid_scores:
            raise ValueError("NorCal renormalises softmax scores; the loss scores with sigmoids")
        self.register_buffer("norcal_counts", None if norcal_gamma is None else
                             positive_counts(class_counts).float(), persistent=False)

    @classmethod
    def from_config(cls, cfg, num_classes, feature_channels, spatial, background_column=False):
        long_tail = cfg.MODEL.LONG_TAIL
        name = long_tail.LOSS.NAME
        needs_counts = long_tail_needs_class_counts(cfg)  # ConfigError for an unknown loss
        loss_needs_counts = loss_needs_class_counts(name)
        if background_column:
            check_box_classifier_loss(name)
            check_box_scoring_config(cfg)
        else:
            check_pixel_classifier_loss(name)
        counts = stats = None
        if needs_counts:
            stats = class_stats_from_config(cfg)
            counts = stats.counts
            if len(counts) != num_classes:
                key = "MODEL.ROI_HEADS.NUM_CLASSES" if background_column else "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
                raise ClassStatsError(
                    f"the class statistics {long_tail.CLASS_STATS} have {len(counts)} classes but "
                    f"the model predicts {num_classes}; fix {key} or MODEL.LONG_TAIL.CLASS_STATS "
                    "(regenerate it with `python tools/compute_class_stats.py --dataset NAME`)"
                )
        loss_counts = None
        if loss_needs_counts:
            loss_counts = (counts_with_background(counts, cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION)
                           if background_column else counts)
        # No box is ignored: Detectron2 labels every sampled box, background as K.
        ignore_value = -1 if background_column else cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        box_head = cfg.MODEL.ROI_BOX_HEAD
        options = loss_options(name, long_tail.LOSS)
        if background_column and box_head.USE_FED_LOSS:  # a sigmoid loss (check_box_scoring_config)
            image_counts = torch.tensor(stats.image_counts, dtype=torch.float32)
            options.update(fed_class_weights=image_counts.pow(box_head.FED_LOSS_FREQ_WEIGHT_POWER),
                           fed_num_classes=box_head.FED_LOSS_NUM_CLASSES)
        try:
            if background_column and box_head.USE_SIGMOID_CE and not loss_class(name).sigmoid_scores:
                loss = SigmoidCrossEntropyLoss(ignore_index=ignore_value, **options)  # LOSS.NAME CE
            else:
                loss = build_loss(name, class_counts=loss_counts, ignore_index=ignore_value, **options)
            loss.check_num_classes(num_classes + 1 if background_column else num_classes)
        except ValueError as e:
            raise ConfigError(f"MODEL.LONG_TAIL.LOSS ({name}): {e}") from None
        check_blv_sigma(long_tail)
        return {
            "num_classes": num_classes,
            "feature_channels": feature_channels,
            "spatial": spatial,
            "background_column": background_column,
            "class_counts": counts,
            "blv_sigma": long_tail.BLV.SIGMA if long_tail.BLV.ENABLED else None,
            "blv_distribution": long_tail.BLV.DISTRIBUTION,
            "grw_rho": long_tail.GRW.RHO if long_tail.GRW.ENABLED else None,
            "disalign": long_tail.DISALIGN.ENABLED,
            "confidence_init_std": long_tail.DISALIGN.CONFIDENCE_INIT_STD,
            "loss": loss,
            "ignore_value": ignore_value,
            "norcal_gamma": (box_head.NORCAL.GAMMA if background_column and box_head.NORCAL.ENABLED
                             else None),
        }

    def calibrate(self, logits, features):
        """DisAlign's calibration of the class logits (background passes through), else identity."""
        return logits if self.calibration is None else self.calibration(logits, features)

    @property
    def sigmoid_scores(self):
        """Whether test-time scores are sigmoids of the class logits (sigmoid losses)."""
        return self.loss_fn.sigmoid_scores

    def probabilities(self, logits):
        """Test-time scores of (R, K + 1) box logits (after ``calibrate``): the softmax, or the
        sigmoids for a sigmoid loss (the background column's sigmoid is never used as a
        score); then NorCal when configured."""
        if self.sigmoid_scores:
            return logits.sigmoid()
        probabilities = F.softmax(logits, dim=-1)
        if self.norcal_gamma is not None:
            probabilities = normalised_calibration(probabilities, self.norcal_counts, self.norcal_gamma)
        return probabilities

    @float32_math  # BLV's noise x rarity and the loss in float32 under mixed precision
    def loss(self, logits, targets):
        """The configured loss of the logits, after BLV's variation of the class logits in
        training, with the GRW class weights."""
        if self.variation is not None:
            if self.background_column:
                k = self.num_classes
                logits = torch.cat([self.variation(logits[:, :k]), logits[:, k:]], dim=1)
            else:
                logits = self.variation(logits)
        return self.loss_fn(logits, targets, class_weights=self.class_weights)


class LongTailClassifierOwner(LongTailPart):
    """Extension points of a registered head whose logits go through a :class:`LongTailClassifier`
    (every LongTailSeg decode head and the long-tail box predictor's ROI heads): it reads the
    class counts when MODEL.LONG_TAIL asks for them, and DisAlign makes it a second stage."""

    # The K + 1-way box classifier (True for ROI heads) refuses losses that declare a problem.
    classifies_boxes = False

    @classmethod
    def needs_class_stats(cls, cfg):
        return long_tail_needs_class_counts(cfg)

    @classmethod
    def second_stage(cls, cfg):
        disalign = cfg.MODEL.LONG_TAIL.DISALIGN
        return SecondStage("DisAlign calibration", disalign.STAGE1_CONFIG) if disalign.ENABLED else None

    @classmethod
    def check_config(cls, cfg):
        long_tail_needs_class_counts(cfg)  # an unknown loss name
        check_blv_sigma(cfg.MODEL.LONG_TAIL)
        if cls.classifies_boxes:
            check_box_classifier_loss(cfg.MODEL.LONG_TAIL.LOSS.NAME)
            check_box_scoring_config(cfg)
        else:
            check_pixel_classifier_loss(cfg.MODEL.LONG_TAIL.LOSS.NAME)
