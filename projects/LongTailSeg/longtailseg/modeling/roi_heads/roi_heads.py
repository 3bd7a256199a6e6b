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
"""
import torch

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
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
    ``needs_box_deltas`` (the ROI heads then train other branches on the predicted boxes).
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
        if proposal_deltas is not None:
            losses["loss_box_reg"] = self._box_regression_loss(proposals, proposal_deltas, gt_classes)
        return {name: value * self.loss_weight.get(name, 1.0) for name, value in losses.items()}

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


@ROI_HEADS_REGISTRY.register()
class LongTailStandardROIHeads(StandardROIHeads, LongTailClassifierOwner):
    """StandardROIHeads (box, mask, keypoint branches unchanged) whose box predictor is
    :class:`LongTailFastRCNNOutputLayers`.

    In training, a mask or keypoint branch whose loss can change no trainable parameter (its
    head frozen and its features without gradient, as in DisAlign's stage 2) is not run: its
    loss is left out instead of being computed for nothing; so is the box regression (see the
    box predictor). Inference runs every branch.
    """

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Boxes predicted in training feed the other branches; then the deltas are always needed.
        self.box_predictor.needs_box_deltas = self.train_on_pred_boxes

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        # Detectron2 builds pooler, box head and a plain predictor; the predictor is replaced.
        parts = super()._init_box_head(cfg, input_shape)
        parts["box_predictor"] = LongTailFastRCNNOutputLayers(cfg, parts["box_head"].output_shape)
        return parts

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
