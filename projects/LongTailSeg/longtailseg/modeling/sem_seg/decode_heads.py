"""FCN, PSPNet and OCRNet decode heads for long-tailed semantic segmentation.

All three read the last of ``MODEL.SEM_SEG_HEAD.IN_FEATURES`` (res5 of the dilated ResNet) and
share the DeepLabV3+ head's contract: ``decode`` gives the feature map the classifier reads,
``classify`` applies dropout, the 1x1 classifier and DisAlign's calibration, and logits are
upsampled to label resolution before the long-tail loss (so BLV, GRW and every loss act on them
unchanged). DisAlign's confidence reads the decoded feature before the classifier's dropout, as
the authors' heads do, so it is not noisy in training.
"""
import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ...errors import ConfigError
from ..long_tail_classifier import LongTailClassifier, LongTailClassifierOwner
from .expert import MEDOEExpert

# Dropout before the classifier, as in the three papers' public code (mmsegmentation's default).
CLASSIFIER_DROPOUT = 0.1


def conv_norm_relu(in_channels, out_channels, kernel_size, norm):
    """Conv (no bias when normalised) -> norm -> ReLU, MSRA-initialised."""
    conv = Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                  bias=not norm, norm=get_norm(norm, out_channels), activation=F.relu)
    weight_init.c2_msra_fill(conv)
    return conv


class _LongTailDecodeHead(nn.Module, LongTailClassifierOwner, MEDOEExpert):
    """What the heads share: dropout and the 1x1 classifier, the long-tail policy, upsampling to
    input resolution and the losses; each can serve as a MEDOE expert.

    Subclasses build their layers, then call ``init_head`` and implement ``decode``.
    """

    @classmethod
    def narrow_config(cls, cfg, channels):
        narrow = cfg.clone()
        narrow.defrost()
        narrow.MODEL.SEM_SEG_HEAD.CONVS_DIM = channels
        return narrow

    def init_head(self, *, in_feature, stride, feature_channels, num_classes, ignore_value,
                  loss_weight, long_tail=None):
        self.in_feature = in_feature
        # Output stride of the input feature, from the backbone: the logits are upsampled by it
        # (COMMON_STRIDE belongs to DeepLabV3+'s res2 decoder and is not used here).
        self.stride = stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.dropout = nn.Dropout2d(CLASSIFIER_DROPOUT)
        self.predictor = nn.Conv2d(feature_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)
        self.long_tail = long_tail or LongTailClassifier(num_classes, feature_channels, spatial=True,
                                                         ignore_value=ignore_value)

    @staticmethod
    def common_from_config(cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        in_feature = head.IN_FEATURES[-1]
        if in_feature not in input_shape:
            raise ConfigError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES: the backbone has no '{in_feature}' "
                              f"(it gives {sorted(input_shape)})")
        return {
            "input_shape": input_shape[in_feature],
            "common": dict(
                in_feature=in_feature,
                stride=input_shape[in_feature].stride,
                feature_channels=head.CONVS_DIM,
                num_classes=head.NUM_CLASSES,
                ignore_value=head.IGNORE_VALUE,
                loss_weight=head.LOSS_WEIGHT,
                long_tail=LongTailClassifier(cfg, head.NUM_CLASSES, head.CONVS_DIM, spatial=True),
            ),
            "channels": head.CONVS_DIM,
            "norm": head.NORM,
        }

    @property
    def logits_stride(self):
        """Stride of ``classify``'s logits relative to the input (the backbone feature's)."""
        return self.stride

    def classify(self, decoded):
        return self.long_tail.calibrate(self.predictor(self.dropout(decoded)), decoded)

    def upsample(self, logits, targets=None):
        """To label resolution in training (the padded batch), else ``stride`` x the feature map;
        both are the padded image size whenever it is a multiple of the stride."""
        size = targets.shape[-2:] if targets is not None else (
            logits.shape[-2] * self.stride, logits.shape[-1] * self.stride)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def forward(self, features, targets=None):
        decoded = self.decode(features)
        logits = self.upsample(self.classify(decoded), targets if self.training else None)
        if self.training:
            return None, self.losses(logits, targets)
        return logits, {}

    def losses(self, logits, targets):
        """Loss on logits already at label resolution (see ``forward``)."""
        return {"loss_sem_seg": self.long_tail.loss(logits, targets) * self.loss_weight}


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailFCNHead(_LongTailDecodeHead):
    """FCN head (Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015)
    on a dilated backbone: ``num_convs`` 3x3 conv-norm-ReLU, optionally the input concatenated
    back and fused by a 3x3 conv-norm-ReLU, dropout, 1x1 classifier."""

    @configurable
    def __init__(self, input_shape, *, channels, norm, num_convs=2, concat_input=True, common):
        super().__init__()
        if num_convs < 1:
            raise ConfigError("MODEL.SEM_SEG_HEAD.FCN_NUM_CONVS must be >= 1")
        in_channels = input_shape.channels
        self.convs = nn.Sequential(*[
            conv_norm_relu(in_channels if i == 0 else channels, channels, 3, norm)
            for i in range(num_convs)
        ])
        self.fuse = conv_norm_relu(in_channels + channels, channels, 3, norm) if concat_input else None
        self.init_head(**common)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = cls.common_from_config(cfg, input_shape)
        ret["num_convs"] = cfg.MODEL.SEM_SEG_HEAD.FCN_NUM_CONVS
        ret["concat_input"] = cfg.MODEL.SEM_SEG_HEAD.FCN_CONCAT_INPUT
        return ret

    def decode(self, features, projected=None):
        x = features[self.in_feature]
        y = self.convs(x)
        if self.fuse is not None:
            y = self.fuse(torch.cat([x, y], dim=1))
        return y


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailPSPHead(_LongTailDecodeHead):
    """Pyramid pooling head (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017).

    Adaptive average pooling to ``pool_scales`` bins, so any input size works. As in the paper,
    each branch's 1x1 conv-norm-ReLU reduces the input to 1/len(pool_scales) of its channels;
    the branches are upsampled bilinearly, concatenated with the input and fused by a 3x3
    conv-norm-ReLU to ``channels``.

    Note: the 1x1-bin branch normalises one value per channel and image, so BatchNorm in
    training needs more than one image per (sync) batch; batch 1 raises "Expected more than
    1 value per channel". The norm is kept (the paper's setting; batches are >= 2 in practice).
    """

    @configurable
    def __init__(self, input_shape, *, channels, norm, pool_scales=(1, 2, 3, 6), common):
        super().__init__()
        in_channels = input_shape.channels
        branch_channels = max(in_channels // len(pool_scales), 1)
        self.pool_scales = tuple(pool_scales)
        self.branches = nn.ModuleList([
            nn.Sequential(nn.AdaptiveAvgPool2d(scale),
                          conv_norm_relu(in_channels, branch_channels, 1, norm))
            for scale in self.pool_scales
        ])
        self.bottleneck = conv_norm_relu(in_channels + branch_channels * len(pool_scales),
                                         channels, 3, norm)
        self.init_head(**common)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = cls.common_from_config(cfg, input_shape)
        ret["pool_scales"] = tuple(cfg.MODEL.SEM_SEG_HEAD.PSP_POOL_SCALES)
        return ret

    def decode(self, features, projected=None):
        x = features[self.in_feature]
        pyramid = [x] + [
            F.interpolate(branch(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
            for branch in self.branches
        ]
        return self.bottleneck(torch.cat(pyramid, dim=1))


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailOCRHead(_LongTailDecodeHead):
    """Object-contextual representations (Yuan et al., "Object-Contextual Representations for
    Semantic Segmentation", ECCV 2020).

    1. An auxiliary branch (3x3 conv-norm-ReLU, 1x1 to the classes) gives soft object regions.
    2. Pixel representation: 3x3 conv-norm-ReLU of the input.
    3. Object region representation: for each class, the pixel representations weighted by the
       region's softmax over pixels.
    4. Pixel-region relation: scaled dot-product attention of pixel queries on region keys
       (two 1x1 conv-norm-ReLU each, ``key_channels``), the values projected regions; the
       context is projected back to ``channels``.
    5. Augmented representation: concat(context, pixel) -> 1x1 conv-norm-ReLU, dropout, 1x1
       classifier.

    Losses: the main logits get the configured long-tail loss (BLV, GRW, ...); the auxiliary
    region logits get plain cross-entropy x ``aux_loss_weight`` (0.4, the authors' weight) as
    ``loss_sem_seg_aux``: the BLV authors also keep auxiliary heads on plain CE, and DisAlign
    calibrates only the main classifier. The auxiliary branch reads the same feature as the
    main one (res5): the paper's ResNet setting puts it on res4, which this head does not need.
    On HRNet (the paper's HRNet-W48 model, read from the backbone's ``concat``: all branches at
    1/4) the auxiliary conv is 1x1 at the input's width (``aux_kernel_size`` 1,
    ``aux_channels`` 720), as in the authors' and mmsegmentation's model.
    """

    @configurable
    def __init__(self, input_shape, *, channels, norm, key_channels=256, aux_loss_weight=0.4,
                 aux_kernel_size=3, aux_channels=0, common):
        super().__init__()
        in_channels = input_shape.channels
        num_classes = common["num_classes"]
        self.aux_loss_weight = aux_loss_weight
        self.key_channels = key_channels
        aux_channels = aux_channels or channels
        self.soft_regions = nn.Sequential(
            conv_norm_relu(in_channels, aux_channels, aux_kernel_size, norm),
            nn.Conv2d(aux_channels, num_classes, kernel_size=1))
        nn.init.normal_(self.soft_regions[1].weight, std=0.001)
        nn.init.zeros_(self.soft_regions[1].bias)
        self.pixel = conv_norm_relu(in_channels, channels, 3, norm)
        self.query = nn.Sequential(conv_norm_relu(channels, key_channels, 1, norm),
                                   conv_norm_relu(key_channels, key_channels, 1, norm))
        self.key = nn.Sequential(conv_norm_relu(channels, key_channels, 1, norm),
                                 conv_norm_relu(key_channels, key_channels, 1, norm))
        self.value = conv_norm_relu(channels, key_channels, 1, norm)
        self.context_up = conv_norm_relu(key_channels, channels, 1, norm)
        self.bottleneck = conv_norm_relu(2 * channels, channels, 1, norm)
        self.init_head(**common)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = cls.common_from_config(cfg, input_shape)
        ret["key_channels"] = cfg.MODEL.SEM_SEG_HEAD.OCR_KEY_CHANNELS
        ret["aux_loss_weight"] = cfg.MODEL.SEM_SEG_HEAD.OCR_AUX_LOSS_WEIGHT
        ret["aux_kernel_size"] = cfg.MODEL.SEM_SEG_HEAD.OCR_AUX_KERNEL_SIZE
        ret["aux_channels"] = cfg.MODEL.SEM_SEG_HEAD.OCR_AUX_CHANNELS
        return ret

    @classmethod
    def narrow_config(cls, cfg, channels):
        # The attention's keys no wider than the narrowed head.
        narrow = super().narrow_config(cfg, channels)
        head = narrow.MODEL.SEM_SEG_HEAD
        head.OCR_KEY_CHANNELS = min(head.OCR_KEY_CHANNELS, channels)
        if head.OCR_AUX_CHANNELS:
            head.OCR_AUX_CHANNELS = min(head.OCR_AUX_CHANNELS, channels)
        return narrow

    def decode_with_aux(self, features):
        """(augmented representation the classifier reads, auxiliary soft-region logits)."""
        x = features[self.in_feature]
        aux_logits = self.soft_regions(x)  # (N, K, H, W)
        pixels = self.pixel(x)  # (N, C, H, W)
        n, c, h, w = pixels.shape
        # Object region representations: (N, K, HW) softmax over pixels @ (N, HW, C) -> (N, C, K, 1)
        weights = F.softmax(aux_logits.flatten(2), dim=2)
        regions = torch.bmm(weights, pixels.flatten(2).transpose(1, 2))
        regions = regions.transpose(1, 2).unsqueeze(3)
        # Pixel-region relation: (N, HW, Ck) @ (N, Ck, K) -> softmax over regions
        query = self.query(pixels).flatten(2).transpose(1, 2)
        key = self.key(regions).flatten(2)
        value = self.value(regions).flatten(2).transpose(1, 2)  # (N, K, Ck)
        relation = F.softmax(torch.bmm(query, key) * self.key_channels ** -0.5, dim=-1)
        context = torch.bmm(relation, value).transpose(1, 2).reshape(n, self.key_channels, h, w)
        context = self.context_up(context)
        augmented = self.bottleneck(torch.cat([context, pixels], dim=1))
        return augmented, aux_logits

    def decode(self, features, projected=None):
        return self.decode_with_aux(features)[0]

    def forward(self, features, targets=None):
        decoded, aux_logits = self.decode_with_aux(features)
        logits = self.upsample(self.classify(decoded), targets if self.training else None)
        if not self.training:
            return logits, {}
        losses = self.losses(logits, targets)
        aux_logits = self.upsample(aux_logits, targets)
        if (targets != self.ignore_value).any():
            aux = F.cross_entropy(aux_logits, targets, ignore_index=self.ignore_value)
        else:  # all pixels ignored: CE's mean would be 0/0
            aux = aux_logits.sum() * 0.0
        losses["loss_sem_seg_aux"] = aux * self.aux_loss_weight
        return None, losses
