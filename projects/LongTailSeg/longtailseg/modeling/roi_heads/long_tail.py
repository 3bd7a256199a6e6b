"""Long-tail ROI heads for LVIS instance segmentation: Detectron2's StandardROIHeads with a box
predictor whose classifier can be cosine, whose foreground logits can be DisAlign-calibrated,
and whose classification loss takes BLV, GRW and any suitable loss of the registry.

The box classifier has K + 1 outputs, background last (Detectron2's layout). The choices:

* cosine classifier: all K + 1 outputs, background included (the DisAlign authors' head);
* DisAlign: only the K foreground logits are calibrated, the background logit passes through;
* BLV: training-only variation of the K foreground logits, scaled by the instance counts of the
  class statistics; the background logit gets none;
* GRW: weights w_c = r_c^-rho over the K foreground classes, normalised to sum K; background
  weight 1 (authors' detection code). As everywhere in the loss registry, the weighted loss is
  divided by the number of sampled boxes (the authors' ``F.cross_entropy(weight=...)`` divides
  by sum w[y]; with background weight 1 on most boxes the two differ little).

The math lives in ``longtailseg.longtail``; this module only wires it into Detectron2. Parameter
names are Detectron2's (``cls_score``, ``bbox_pred``), so a plain Detectron2 Mask R-CNN checkpoint
loads with only the new keys missing (``box_predictor.calibration.*``; ``cls_score.scale`` with
the cosine classifier, which has no ``cls_score.bias``).
"""
import torch

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

from ...data.class_counting import load_or_compute_class_stats
from ...errors import ClassStatsError, ConfigError
from ...longtail.calibration import DisAlignCalibration, generalized_reweighting
from ...longtail.cosine import CosineClassifier
from ...longtail.losses import build_loss, loss_needs_class_counts
from ...longtail.variation import LogitVariation
from ..sem_seg.long_tail import loss_options

# Losses whose class counts would make background (by far the most frequent "class" of the box
# classifier) the most down-weighted one: CB's effective-number weights shrink its weight, and
# Seesaw would mitigate the negative gradients background boxes put on every foreground class
# (Seesaw's own detector avoids this with a separate objectness branch). Refused here.
UNSUITED_BOX_LOSSES = {
    "CB": "its effective-number weights would give background the smallest weight",
    "CBFocal": "its effective-number weights would give background the smallest weight",
    "Seesaw": "it would mitigate the penalties that background boxes put on foreground classes",
}
SUITED_BOX_LOSSES = ("CE", "Focal", "PAT", "BMS", "LA", "LDAM")


def counts_with_background(class_counts, positive_fraction):
    """K foreground instance counts plus a background count for count-based losses (BMS, LA,
    LDAM) on K + 1 columns: the background share of the sampled boxes is 1 - positive_fraction
    when images have enough proposals, so background counts sum(n) (1 - f) / f."""
    total = float(sum(class_counts))
    return list(class_counts) + [total * (1.0 - positive_fraction) / positive_fraction]


def box_loss_needs_class_counts(name):
    try:
        return loss_needs_class_counts(name)
    except KeyError as e:
        raise ConfigError(f"MODEL.LONG_TAIL.LOSS.NAME: {e.args[0]}") from None


def box_predictor_needs_class_stats(cfg):
    """True when the long-tail box predictor of ``cfg`` reads the class statistics."""
    lt = cfg.MODEL.LONG_TAIL
    return (cfg.MODEL.ROI_HEADS.NAME == LongTailStandardROIHeads.__name__
            and (lt.BLV.ENABLED or lt.GRW.ENABLED or box_loss_needs_class_counts(lt.LOSS.NAME)))


def long_tail_box_options(cfg):
    """Keyword arguments of LongTailFastRCNNOutputLayers from MODEL.LONG_TAIL and COSINE."""
    lt = cfg.MODEL.LONG_TAIL
    name = lt.LOSS.NAME
    loss_needs_counts = box_loss_needs_class_counts(name)
    if name in UNSUITED_BOX_LOSSES:
        raise ConfigError(
            f"MODEL.LONG_TAIL.LOSS.NAME: {name} is not used for the K + 1-way box classifier "
            f"because {UNSUITED_BOX_LOSSES[name]}; choose one of {', '.join(SUITED_BOX_LOSSES)} "
            "(and MODEL.LONG_TAIL.GRW for foreground class weights)"
        )
    needs_counts = lt.BLV.ENABLED or lt.GRW.ENABLED or loss_needs_counts
    counts = load_or_compute_class_stats(cfg).counts if needs_counts else None
    loss_counts = (counts_with_background(counts, cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION)
                   if loss_needs_counts else None)
    cosine = cfg.MODEL.ROI_BOX_HEAD.COSINE
    return {
        "cosine_scale": cosine.INIT_SCALE if cosine.ENABLED else None,
        "class_counts": counts,
        "blv_sigma": lt.BLV.SIGMA if lt.BLV.ENABLED else None,
        "grw_rho": lt.GRW.RHO if lt.GRW.ENABLED else None,
        "disalign": lt.DISALIGN.ENABLED,
        "confidence_init_std": lt.DISALIGN.CONFIDENCE_INIT_STD,
        # No box is ignored: Detectron2 labels every sampled box, background as K.
        "loss": build_loss(name, class_counts=loss_counts, ignore_index=-1,
                           **loss_options(name, lt.LOSS)),
    }


class LongTailFastRCNNOutputLayers(FastRCNNOutputLayers):
    """FastRCNNOutputLayers with a cosine option, DisAlign, BLV, GRW and the loss registry.

    Args (besides FastRCNNOutputLayers'):
        cosine_scale: None for Detectron2's linear classifier, else the initial scale of a
            cosine classifier over all K + 1 outputs.
        class_counts: training instances of the K foreground classes (for BLV and GRW).
        blv_sigma: BLV's sigma, or None for no BLV.
        grw_rho: GRW's rho, or None for no class weights.
        disalign: add DisAlign calibration of the K foreground logits.
        confidence_init_std: std of the calibration's confidence layer init.
        loss: a loss of ``longtailseg.longtail.losses`` for K + 1 columns (default: CE).
    """

    @configurable
    def __init__(self, input_shape, *, cosine_scale=None, class_counts=None, blv_sigma=None,
                 grw_rho=None, disalign=False, confidence_init_std=0.01, loss=None, **kwargs):
        super().__init__(input_shape, **kwargs)
        num_classes = self.num_classes
        input_size = self.cls_score.in_features
        if cosine_scale is not None:
            self.cls_score = CosineClassifier(input_size, num_classes + 1, init_scale=cosine_scale)
        if class_counts is not None and len(class_counts) != num_classes:
            raise ClassStatsError(
                f"the class statistics have {len(class_counts)} classes but the box predictor has "
                f"{num_classes}; fix MODEL.ROI_HEADS.NUM_CLASSES or MODEL.LONG_TAIL.CLASS_STATS"
            )
        if (blv_sigma is not None or grw_rho is not None) and class_counts is None:
            raise ValueError("BLV and GRW need the class counts")
        self.variation = LogitVariation(class_counts, blv_sigma) if blv_sigma is not None else None
        weights = None
        if grw_rho is not None:
            weights = torch.cat([generalized_reweighting(class_counts, grw_rho), torch.ones(1)])
        # Derived from the class statistics, so not saved in checkpoints.
        self.register_buffer("class_weights", weights, persistent=False)
        self.calibration = (
            DisAlignCalibration(num_classes, input_size, spatial=False,
                                confidence_init_std=confidence_init_std)
            if disalign else None
        )
        # A submodule, so that its class-count buffers follow the predictor's device.
        self.loss_fn = build_loss("CE", ignore_index=-1) if loss is None else loss

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(long_tail_box_options(cfg))
        return ret

    def forward(self, x):
        """Scores (R, K + 1), foreground calibrated if DisAlign is on, and box deltas."""
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        scores = self.cls_score(x)
        if self.calibration is not None:
            scores = self.calibration(scores, x)
        return scores, self.bbox_pred(x)

    def losses(self, predictions, proposals):
        """Detectron2's losses (box regression, accuracy logging) with ``loss_cls`` replaced by
        the long-tail classification loss."""
        losses = super().losses(predictions, proposals)
        scores = predictions[0]
        gt_classes = (cat([p.gt_classes for p in proposals], dim=0) if len(proposals)
                      else torch.empty(0, dtype=torch.long, device=scores.device))
        weight = self.loss_weight.get("loss_cls", 1.0)
        losses["loss_cls"] = self.classification_loss(scores, gt_classes) * weight
        return losses

    def classification_loss(self, scores, gt_classes):
        """The configured loss on (R, K + 1) scores: BLV on the foreground columns in training,
        GRW class weights (background 1)."""
        if self.variation is not None:
            k = self.num_classes
            scores = torch.cat([self.variation(scores[:, :k]), scores[:, k:]], dim=1)
        return self.loss_fn(scores, gt_classes, class_weights=self.class_weights)


@ROI_HEADS_REGISTRY.register()
class LongTailStandardROIHeads(StandardROIHeads):
    """StandardROIHeads (box, mask, keypoint branches unchanged) whose box predictor is
    :class:`LongTailFastRCNNOutputLayers`."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        # Detectron2 builds pooler, box head and a plain predictor; the predictor is replaced.
        parts = super()._init_box_head(cfg, input_shape)
        parts["box_predictor"] = LongTailFastRCNNOutputLayers(cfg, parts["box_head"].output_shape)
        return parts
