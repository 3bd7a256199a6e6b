"""Detectron2's RPN, less its loss where the loss can train nothing."""
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN

from .frozen_branches import loss_can_train


@PROPOSAL_GENERATOR_REGISTRY.register()
class LongTailRPN(RPN):
    """Detectron2's RPN (same parameters, proposals and losses) whose training step skips the
    anchor matching and the RPN loss when neither its head nor its input features can learn,
    as in DisAlign's stage 2. Its proposals are still drawn with the training settings
    (``PRE_NMS_TOPK_TRAIN``, ``POST_NMS_TOPK_TRAIN``): the ROI heads are trained on them.
    """

    _loss_skipped = False  # decided per forward pass

    def forward(self, images, features, gt_instances=None):
        self._loss_skipped = self.training and not loss_can_train(
            [self.rpn_head], [features[name] for name in self.in_features])
        return super().forward(images, features, gt_instances)

    def label_and_sample_anchors(self, anchors, gt_instances):
        if self._loss_skipped:
            return None, None
        return super().label_and_sample_anchors(anchors, gt_instances)

    def losses(self, *args, **kwargs):
        if self._loss_skipped:
            return {}
        return super().losses(*args, **kwargs)
