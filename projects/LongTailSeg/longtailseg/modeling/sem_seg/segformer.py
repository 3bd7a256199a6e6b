"""SegFormer's all-MLP decode head (Xie et al., "SegFormer: Simple and Efficient Design for
Semantic Segmentation with Transformers", NeurIPS 2021, Sec. 3.2, eq. 1), with the long-tail
classifier: BLV, GRW, DisAlign, every loss of the registry, and usable as a MEDOE expert.

Eq. 1, for the four encoder stages F_i (C_i channels, stride 4, 8, 16, 32):

    F^_i = Linear(C_i, C)(F_i)                     per-stage projection to C channels
    F^_i = Upsample(H/4 x W/4)(F^_i)               bilinear, to the finest stage's size
    F    = Linear(4C, C)(Concat(F^_i))             fuse
    M    = Linear(C, N_cls)(F)                     classify

A "Linear" on a feature map is a 1x1 convolution. As in the authors' code, the fuse layer is
followed by BatchNorm and ReLU (``MODEL.SEM_SEG_HEAD.NORM``), the stages are concatenated
coarsest first, and dropout 0.1 precedes the classifier; C is ``MODEL.SEM_SEG_HEAD.CONVS_DIM``
(768 for MiT-B2 ... B5, 256 for B0 / B1). The logits have the finest stage's stride (4) and are
upsampled to label resolution before the long-tail loss, as in the package's other heads.
"""
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ...errors import ConfigError
from .decode_heads import _LongTailDecodeHead, conv_norm_relu


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailSegFormerHead(_LongTailDecodeHead):
    """All-MLP decoder over every feature of ``MODEL.SEM_SEG_HEAD.IN_FEATURES`` (finest first).

    As a MEDOE expert the whole decoder is the expert's context module: experts 2..K get their
    own projections and fuse layer at ``MODEL.MEDOE.EXPERT_CHANNELS`` channels (nothing is shared
    but the backbone).
    """

    @configurable
    def __init__(self, input_shapes, *, in_features, channels, norm, common):
        super().__init__()
        self.in_features = list(in_features)
        self.projections = nn.ModuleDict({
            name: nn.Conv2d(input_shapes[name].channels, channels, kernel_size=1)
            for name in self.in_features
        })
        self.fuse = conv_norm_relu(len(self.in_features) * channels, channels, 1, norm)
        self.init_head(**common)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        in_features = list(head.IN_FEATURES)
        missing = [name for name in in_features if name not in input_shape]
        if missing or not in_features:
            raise ConfigError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES: the backbone has no {missing or 'feature named'} "
                              f"(it gives {sorted(input_shape)})")
        strides = [input_shape[name].stride for name in in_features]
        if strides != sorted(strides):
            raise ConfigError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES {in_features} must go from the finest to the "
                              f"coarsest feature (strides {strides})")
        ret = cls.common_from_config(cfg, input_shape)
        # The logits have the finest feature's stride (SegFormer: 1/4 of the input).
        ret["common"]["in_feature"] = in_features[0]
        ret["common"]["stride"] = strides[0]
        ret["input_shapes"] = {name: input_shape[name] for name in in_features}
        ret["in_features"] = in_features
        del ret["input_shape"]
        return ret

    def decode(self, features, projected=None):
        finest = features[self.in_features[0]]
        size = finest.shape[-2:]
        upsampled = []
        # Coarsest first, as the authors concatenate (c4, c3, c2, c1).
        for name in reversed(self.in_features):
            y = self.projections[name](features[name])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            upsampled.append(y)
        return self.fuse(torch.cat(upsampled, dim=1))
