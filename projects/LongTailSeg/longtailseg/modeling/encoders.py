"""Encoders of the encoder-decoder segmenters (U-Net family, SegNet) as Detectron2 backbones.

* ``build_vgg_encoder_backbone``: the plain VGG-style contracting path that U-Net (Ronneberger
  et al. 2015), Attention U-Net (Oktay et al. 2018), U-Net++ (Zhou et al. 2018) and SegNet
  (Badrinarayanan et al. 2017, the 13 convolutions of VGG16) share, trained from scratch as in
  PAT. Written here. Stage i (1-based) is CONVS_PER_STAGE[i] 3x3 conv-norm-ReLU at stride
  2^(i-1) (``conv{i}``), followed by 2x2 max-pooling (``pool{i}``, stride 2^i) whose argmax
  indices are returned too (``pool{i}_indices``), the unpooling positions SegNet's decoder
  reads. U-Net's last stage is not pooled (POOL_LAST False); SegNet's is.
* ``build_smp_encoder_backbone``: any encoder of segmentation-models-pytorch (``resnet34``, the
  default of its ``Unet``; ``vgg16_bn``; ``tu-<timm name>``), randomly initialised or loaded
  from a local state-dict file; its features ``stage1..stage{DEPTH}`` at stride 2^i (the
  encoder's stride-1 identity feature is left out).

The feature names and strides are the Detectron2 ``output_shape``; the heads of
``sem_seg/unet.py`` and ``sem_seg/segnet.py`` read them by MODEL.SEM_SEG_HEAD.IN_FEATURES.
"""
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..errors import ConfigError


class VGGStyleEncoder(Backbone):
    """Stages of 3x3 conv-norm-ReLU separated by 2x2 max-pooling with argmax indices.

    Args:
        in_channels: image channels.
        channels: output channels of each stage.
        convs_per_stage: number of convolutions of each stage.
        norm: Detectron2 norm name ("BN", "SyncBN", "GN", "" for none).
        pool_last: also max-pool the last stage (SegNet) and return ``pool{S}``.
    """

    def __init__(self, in_channels, channels, convs_per_stage, norm="BN", pool_last=False):
        super().__init__()
        if not channels or len(channels) != len(convs_per_stage) or min(convs_per_stage) < 1:
            raise ConfigError(
                "MODEL.VGG_ENCODER: CHANNELS and CONVS_PER_STAGE need one entry per stage and "
                f"at least one conv each (got {list(channels)} and {list(convs_per_stage)})")
        self.stages = nn.ModuleList()
        self._out_feature_channels, self._out_feature_strides = {}, {}
        previous = in_channels
        for i, (width, convs) in enumerate(zip(channels, convs_per_stage), start=1):
            layers = []
            for j in range(convs):
                conv = Conv2d(previous if j == 0 else width, width, 3, padding=1, bias=not norm,
                              norm=get_norm(norm, width), activation=F.relu)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                layers.append(conv)
            self.stages.append(nn.Sequential(*layers))
            self._out_feature_channels[f"conv{i}"] = width
            self._out_feature_strides[f"conv{i}"] = 2 ** (i - 1)
            if i < len(channels) or pool_last:
                self._out_feature_channels[f"pool{i}"] = width
                self._out_feature_strides[f"pool{i}"] = 2 ** i
            previous = width
        self.pool_last = pool_last
        self._out_features = list(self._out_feature_channels)

    @property
    def size_divisibility(self):
        # Every pooled map even-sized, so unpooling and 2x upsampling restore the sizes exactly.
        return 2 ** (len(self.stages) - (0 if self.pool_last else 1))

    def forward(self, x):
        """{name: feature}: ``conv{i}``, ``pool{i}`` and the pooling argmax ``pool{i}_indices``
        (int64, flat positions in ``conv{i}``'s plane, as ``F.max_unpool2d`` reads them)."""
        out = {}
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            out[f"conv{i}"] = x
            if f"pool{i}" in self._out_feature_channels:
                x, indices = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
                out[f"pool{i}"], out[f"pool{i}_indices"] = x, indices
        return out


@BACKBONE_REGISTRY.register()
def build_vgg_encoder_backbone(cfg, input_shape):
    """MODEL.VGG_ENCODER: U-Net's / SegNet's plain convolutional encoder (see the module)."""
    enc = cfg.MODEL.VGG_ENCODER
    return VGGStyleEncoder(input_shape.channels, list(enc.CHANNELS), list(enc.CONVS_PER_STAGE),
                           norm=enc.NORM, pool_last=enc.POOL_LAST)


class SMPEncoder(Backbone):
    """A segmentation-models-pytorch encoder as a Detectron2 backbone: ``stage{i}`` at stride 2^i."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        depth = len(encoder.out_channels) - 1
        self._out_features = [f"stage{i}" for i in range(1, depth + 1)]
        self._channels = dict(zip(self._out_features, encoder.out_channels[1:]))
        self._depth = depth

    @property
    def size_divisibility(self):
        return 2 ** self._depth

    def forward(self, x):
        # smp encoders return [identity, stride 2, ..., stride 2^depth].
        return dict(zip(self._out_features, self.encoder(x)[1:]))

    def output_shape(self):
        return {name: ShapeSpec(channels=self._channels[name], stride=2 ** i)
                for i, name in enumerate(self._out_features, start=1)}


@BACKBONE_REGISTRY.register()
def build_smp_encoder_backbone(cfg, input_shape):
    """MODEL.SMP_ENCODER.NAME from segmentation-models-pytorch, randomly initialised (PAT trains
    from scratch); pretrained weights come from a local file through MODEL.WEIGHTS."""
    import segmentation_models_pytorch as smp

    enc = cfg.MODEL.SMP_ENCODER
    try:
        encoder = smp.encoders.get_encoder(enc.NAME, in_channels=input_shape.channels,
                                           depth=enc.DEPTH, weights=None)
    except KeyError as e:
        raise ConfigError(f"MODEL.SMP_ENCODER.NAME: {e.args[0]}"[:400]) from None
    return SMPEncoder(encoder)
