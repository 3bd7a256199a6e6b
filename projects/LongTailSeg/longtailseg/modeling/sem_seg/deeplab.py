"""DeepLabV3+ head for long-tailed semantic segmentation."""
import torch.nn.functional as F

from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.projects.deeplab import DeepLabV3PlusHead


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailDeepLabV3PlusHead(DeepLabV3PlusHead):
    """Detectron2's DeepLabV3+ head with image-level ASPP pooling over the whole feature map.

    Detectron2's head sizes the ASPP pooling kernel from ``INPUT.CROP.SIZE``, so inference on an
    image of any other size (ADE20K's vary) fails with "pool_kernel_size must be divisible".
    Global average pooling, as in the DeepLabV3 paper and mmsegmentation, works for every size.

    The loss is computed on logits upsampled to label resolution (``losses``), which is where the
    long-tail methods act on them.
    """

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["train_size"] = None  # -> nn.AdaptiveAvgPool2d(1) in ASPP's image pooling branch
        return ret

    def forward(self, features, targets=None):
        logits = self.layers(features)
        if self.decoder_only:
            return logits
        logits = F.interpolate(
            logits, scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
        if self.training:
            return None, self.losses(logits, targets)
        return logits, {}

    def losses(self, logits, targets):
        """Loss on logits already at label resolution (see ``forward``)."""
        return {"loss_sem_seg": self.loss(logits, targets) * self.loss_weight}
