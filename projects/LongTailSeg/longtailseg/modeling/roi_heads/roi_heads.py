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

The policy is the shared :class:`LongTailClassifier` (``box_predictor.long_tail``); the math lives
in ``longtailseg.longtail``. Parameter names are Detectron2's (``cls_score``, ``bbox_pred``), so a
plain Detectron2 Mask R-CNN checkpoint loads with only the new keys missing
(``box_predictor.long_tail.calibration.*``; ``cls_score.scale`` with the cosine classifier, which
has no ``cls_score.bias``).

:class:`LongTailCascadeROIHeads` is Detectron2's CascadeROIHeads (Cai & Vasconcelos) with this box
predictor at every stage; see its docstring for how the stages' scores are combined.
"""
import torch

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads, StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, _log_classification_stats

from ...longtail.cosine import CosineClassifier
from ..frozen_branches import loss_can_train
from ..long_tail_classifier import LongTailClassifier, LongTailClassifierOwner


class LongTailFastRCNNOutputLayers(FastRCNNOutputLayers):
    """FastRCNNOutputLayers with a cosine option and the long-tail policy (DisAlign, BLV, GRW and
    the loss registry) on its K + 1 scores.

    Args (besides FastRCNNOutputLayers'):
        cosine_scale: None for Detectron2's linear classifier, else the initial scale of a
            cosine classifier over all K + 1 outputs.
        long_tail: the :class:`LongTailClassifier` of the K foreground classes (background
            column last); default plain CE.

    In training, the box deltas and their loss are left out when they can train nothing (the
    regression layer frozen and its input without gradient, as in DisAlign's stage 2), unless
    ``needs_box_deltas`` (the ROI heads then train other branches, or the next cascade stage, on
    the predicted boxes): the deltas are then computed, their loss still left out.

    Test-time scores (``predict_probs``) are the long-tail classifier's: the softmax of the
    (calibrated) logits, or their sigmoids for a sigmoid loss, then NorCal when configured.
    """

    needs_box_deltas = False

    @configurable
    def __init__(self, input_shape, *, cosine_scale=None, long_tail=None, **kwargs):
        super().__init__(input_shape, **kwargs)
        input_size = self.cls_score.in_features
        if cosine_scale is not None:
            self.cls_score = CosineClassifier(input_size, self.num_classes + 1, init_scale=cosine_scale)
        self.long_tail = long_tail or LongTailClassifier(
            self.num_classes, input_size, spatial=False, background_column=True, ignore_value=-1)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        # Detectron2 main reads its sigmoid / federated-loss keys here too; the long-tail
        # classifier owns them (on v0.6 as well), so main's own copy stays off.
        for key in ("use_sigmoid_ce", "use_fed_loss", "get_fed_loss_cls_weights", "fed_loss_num_classes"):
            ret.pop(key, None)
        cosine = cfg.MODEL.ROI_BOX_HEAD.COSINE
        ret["cosine_scale"] = cosine.INIT_SCALE if cosine.ENABLED else None
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        ret["long_tail"] = LongTailClassifier(cfg, ret["num_classes"], input_size, spatial=False,
                                              background_column=True)
        return ret

    def forward(self, x):
        """Scores (R, K + 1), foreground calibrated if DisAlign is on, and box deltas (None
        in training when their loss can train nothing)."""
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        scores = self.long_tail.calibrate(self.cls_score(x), x)
        if self.training and not self.needs_box_deltas and not loss_can_train([self.bbox_pred], [x]):
            return scores, None
        return scores, self.bbox_pred(x)

    def losses(self, predictions, proposals):
        """The long-tail classification loss and Detectron2's box regression loss (none
        without box deltas), each times its ``loss_weight``; classification accuracy is logged as
        Detectron2 logs it."""
        scores, proposal_deltas = predictions
        gt_classes = (cat([p.gt_classes for p in proposals], dim=0) if len(proposals)
                      else torch.empty(0, dtype=torch.long, device=scores.device))
        _log_classification_stats(scores, gt_classes)
        losses = {"loss_cls": self.long_tail.loss(scores, gt_classes)}
        # Deltas without gradient (needed only for the boxes) have a loss that trains nothing.
        if proposal_deltas is not None and proposal_deltas.requires_grad:
            losses["loss_box_reg"] = self._box_regression_loss(proposals, proposal_deltas, gt_classes)
        return {name: value * self.loss_weight.get(name, 1.0) for name, value in losses.items()}

    def predict_probs(self, predictions, proposals):
        scores, _ = predictions
        return self.long_tail.probabilities(scores).split([len(p) for p in proposals], dim=0)

    def _box_regression_loss(self, proposals, proposal_deltas, gt_classes):
        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            # Images without ground truth have only background proposals, whose regression
            # loss is not counted; their proposal boxes stand in for the missing targets.
            gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor
                            for p in proposals], dim=0)
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)
        return self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, gt_classes)


class FrozenBranchesSkipped:
    """Mixin of ROI heads: in training, a mask or keypoint branch whose loss can change no
    trainable parameter (its head frozen and its features without gradient, as in DisAlign's
    stage 2) is not run; its loss is left out instead of being computed for nothing. Inference
    runs every branch."""

    def _forward_mask(self, features, instances):
        if self.training and self.mask_on and not loss_can_train(
                [self.mask_head], [features[name] for name in self.mask_in_features]):
            return {}
        return super()._forward_mask(features, instances)

    def _forward_keypoint(self, features, instances):
        if self.training and self.keypoint_on and not loss_can_train(
                [self.keypoint_head], [features[name] for name in self.keypoint_in_features]):
            return {}
        return super()._forward_keypoint(features, instances)


def _for_replaced_predictors(cfg):
    """``cfg`` for the plain predictors Detectron2's ``_init_box_head`` builds before they are
    replaced: with the federated loss off, since Detectron2 main's predictor would read its class
    weights from the dataset's metadata (``class_image_count``) when built; the long-tail
    classifier takes them from the class statistics instead."""
    if not cfg.MODEL.ROI_BOX_HEAD.get("USE_FED_LOSS", False):
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
    return cfg


@ROI_HEADS_REGISTRY.register()
class LongTailStandardROIHeads(FrozenBranchesSkipped, StandardROIHeads, LongTailClassifierOwner):
    """StandardROIHeads (box, mask, keypoint branches unchanged) whose box predictor is
    :class:`LongTailFastRCNNOutputLayers`.

    In training, a mask or keypoint branch whose loss can change no trainable parameter is not
    run (:class:`FrozenBranchesSkipped`); so is the box regression (see the box predictor).
    """

    classifies_boxes = True

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Boxes predicted in training feed the other branches; then the deltas are always needed.
        self.box_predictor.needs_box_deltas = self.train_on_pred_boxes

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        # Detectron2 builds pooler, box head and a plain predictor; the predictor is replaced.
        parts = super()._init_box_head(_for_replaced_predictors(cfg), input_shape)
        parts["box_predictor"] = LongTailFastRCNNOutputLayers(cfg, parts["box_head"].output_shape)
        return parts


@ROI_HEADS_REGISTRY.register()
class LongTailCascadeROIHeads(FrozenBranchesSkipped, CascadeROIHeads, LongTailClassifierOwner):
    """Detectron2's CascadeROIHeads (Cascade R-CNN, Cai & Vasconcelos 2018: stages trained at
    rising IoU thresholds, ``MODEL.ROI_BOX_CASCADE_HEAD.IOUS``, each refining the previous
    stage's boxes) whose every stage's box predictor is :class:`LongTailFastRCNNOutputLayers`,
    each with its own :class:`LongTailClassifier` built from the same MODEL.LONG_TAIL: cosine
    classifier, BLV, GRW, the loss (softmax, sigmoid / federated, EQLv2) and DisAlign's
    calibration apply to every stage, and each stage's loss is ``loss_cls_stage{k}``.

    **Scores.** As in Detectron2, a box's test-time scores are the mean over the stages of each
    stage's class probabilities for that box (stage k > 0 classifies the boxes that stage k - 1
    regressed, ``predict_probs`` of every stage): with DisAlign, each stage's probabilities
    come from its own calibrated logits (softmax, or sigmoids), so the calibration enters the
    mean stage by stage; NorCal, when enabled, renormalises each stage's probabilities before the
    mean (a mean of distributions still sums to 1). Boxes are the last stage's regression.

    **DisAlign's stage 2** trains the calibration of every stage's classifier (the modules that
    declare ``trained_in_second_stage``) and freezes the rest. The box deltas of every stage are
    still computed (they make the next stage's proposals and the final boxes), but their losses,
    the mask head and the RPN's loss, which can train nothing, are left out.
    """

    classifies_boxes = True

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Every stage's predicted boxes are made in training too (they feed the next stage):
        # its deltas are always computed, their loss left out when it trains nothing.
        for predictor in self.box_predictor:
            predictor.needs_box_deltas = True

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        # Detectron2 builds pooler, box heads and plain predictors; each predictor is replaced
        # by the long-tail one with its stage's box-regression weights.
        parts = super()._init_box_head(_for_replaced_predictors(cfg), input_shape)
        weights = cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS
        parts["box_predictors"] = [
            LongTailFastRCNNOutputLayers(cfg, head.output_shape,
                                         box2box_transform=Box2BoxTransform(weights=w))
            for head, w in zip(parts["box_heads"], weights)
        ]
        return parts
