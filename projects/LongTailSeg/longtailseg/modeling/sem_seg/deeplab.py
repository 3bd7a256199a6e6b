"""DeepLabV3+ head for long-tailed semantic segmentation."""
import torch
import torch.nn.functional as F

from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.projects.deeplab import DeepLabV3PlusHead

from ..long_tail_classifier import LongTailClassifier, LongTailClassifierOwner
from .expert import MEDOEExpert


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailDeepLabV3PlusHead(DeepLabV3PlusHead, LongTailClassifierOwner, MEDOEExpert):
    """Detectron2's DeepLabV3+ head with the long-tail methods on its logits.

    * Image-level ASPP pooling over the whole feature map: Detectron2's head sizes the pooling
      kernel from ``INPUT.CROP.SIZE``, so inference on an image of another size (ADE20K's vary)
      fails with "pool_kernel_size must be divisible". Global average pooling, as in the
      DeepLabV3 paper and mmsegmentation, works for every size.
    * Logits are upsampled to label resolution before the loss, where BLV acts (as in the BLV
      authors' code); DisAlign calibrates them at the decoder's resolution from the decoder
      feature the classifier reads.
    * As a MEDOE expert, its low-level projections are shared: experts 2..K read expert 1's.
    """

    shares_projection = True

    @configurable
    def __init__(self, *args, long_tail: LongTailClassifier = None, **kwargs):
        """``long_tail``: the long-tail policy of the logits (default: plain CE); the other
        arguments are DeepLabV3PlusHead's."""
        super().__init__(*args, **kwargs)
        self.long_tail = long_tail or LongTailClassifier(
            self.predictor.out_channels, self.predictor.in_channels, spatial=True,
            ignore_value=self.ignore_value)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["train_size"] = None  # -> nn.AdaptiveAvgPool2d(1) in ASPP's image pooling branch
        # The classifier reads the top decoder level (res2 with DeepLabV3+'s usual features).
        ret["long_tail"] = LongTailClassifier(cfg, ret["num_classes"], ret["decoder_channels"][0],
                                              spatial=True)
        return ret

    @classmethod
    def narrow_config(cls, cfg, channels):
        narrow = cfg.clone()
        narrow.defrost()
        narrow.MODEL.SEM_SEG_HEAD.CONVS_DIM = channels
        narrow.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = channels
        return narrow

    def project(self, features):
        """The low-level features' 1x1 projections (name -> map), the decoder's skip inputs."""
        return {name: self.decoder[name]["project_conv"](features[name])
                for name in self.in_features[:-1]}

    def drop_projection(self):
        """Removes the low-level projections: ``decode`` then needs ``projected`` from another
        head's ``project`` (MEDOE's experts share the first expert's)."""
        for name in self.in_features[:-1]:
            del self.decoder[name]["project_conv"]

    def decode(self, features, projected=None):
        """The decoder feature map that the 1x1 classifier reads (top-down, res5 -> res2);
        ``projected``: ``project(features)``, computed here when not given."""
        if projected is None:
            projected = self.project(features)
        coarsest = self.in_features[-1]
        y = self.decoder[coarsest]["project_conv"](features[coarsest])  # ASPP
        for name in self.in_features[-2::-1]:
            skip = projected[name]
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = self.decoder[name]["fuse_conv"](torch.cat([skip, y], dim=1))
        return y

    def forward(self, features, targets=None):
        decoded = self.decode(features)
        if self.decoder_only:
            return decoded
        logits = self.classify(decoded)
        logits = F.interpolate(
            logits, scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
        if self.training:
            return None, self.losses(logits, targets)
        return logits, {}

    @property
    def logits_stride(self):
        """Stride of ``classify``'s logits relative to the input (the res2 decoder's)."""
        return self.common_stride

    def classify(self, decoded):
        return self.long_tail.calibrate(self.predictor(decoded), decoded)

    def losses(self, logits, targets):
        """Loss on logits already at label resolution (see ``forward``)."""
        return {"loss_sem_seg": self.long_tail.loss(logits, targets) * self.loss_weight}

