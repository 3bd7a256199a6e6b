"""SegNet's decoder (Badrinarayanan et al., "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017) as a LongTailSeg head. Written here.

The encoder is ``build_vgg_encoder_backbone`` with POOL_LAST (VGG16's 13 convolutions, five
2x2 max-poolings). The decoder mirrors it: for each encoder stage, deepest first, the map is
max-unpooled with the argmax indices that stage's pooling stored (``pool{i}_indices``: each
value goes back to the position its maximum came from, the rest is zero; SegNet's point, no
feature map is copied across), then the stage's number of 3x3 conv-norm-ReLU; the last one of
each stage narrows to the next stage's width (stage 1: its own). A 1x1 classifier and the
``LongTailClassifier`` follow (the paper's softmax classifier; every long-tail method applies).
"""
import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ...errors import ConfigError
from ..long_tail_classifier import LongTailClassifier
from .decode_heads import _LongTailDecodeHead


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailSegNetHead(_LongTailDecodeHead):
    """SegNet decoder on the VGG-style encoder's ``pool{S}`` (IN_FEATURES: its name).

    Args:
        stage_channels: the encoder's stage widths, stage 1 first.
        convs_per_stage: the encoder's convolutions per stage (mirrored).
        max_channels: cap on the decoder's widths (0: mirror the encoder; MEDOE's narrower
            experts set it), except at each unpooling's input, which keeps the encoder's width.
    """

    @configurable
    def __init__(self, *, stage_channels, convs_per_stage, norm, max_channels=0, common):
        super().__init__()
        cap = (lambda c: min(c, max_channels)) if max_channels else (lambda c: c)
        self.num_stages = len(stage_channels)
        # decoder_stages[k] undoes encoder stage S - k.
        self.decoder_stages = nn.ModuleList()
        previous = stage_channels[-1]
        for i in range(self.num_stages, 0, -1):
            width = stage_channels[i - 1]
            out = stage_channels[max(i - 2, 0)]
            layers = []
            for j in range(convs_per_stage[i - 1]):
                last = j == convs_per_stage[i - 1] - 1
                # A stage's last conv feeds the next unpooling, whose indices have the encoder's
                # channels: only the other convs (and stage 1's output) can be narrowed.
                cout = out if last and i > 1 else cap(out if last else width)
                conv = Conv2d(previous, cout, 3, padding=1, bias=not norm,
                              norm=get_norm(norm, cout), activation=F.relu)
                weight_init.c2_msra_fill(conv)
                layers.append(conv)
                previous = cout
            self.decoder_stages.append(nn.Sequential(*layers))
        if common["feature_channels"] != previous:
            raise ValueError(f"feature_channels is {common['feature_channels']}, the decoder gives {previous}")
        self.init_head(**common)
        self.dropout = nn.Identity()  # SegNet has none before its classifier

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        names = list(head.IN_FEATURES)
        if len(names) != 1 or not names[0].startswith("pool") or names[0] not in input_shape:
            raise ConfigError(
                "MODEL.SEM_SEG_HEAD.IN_FEATURES: SegNet reads the deepest pooled map of the VGG "
                f"encoder, e.g. ['pool5'] (MODEL.VGG_ENCODER.POOL_LAST True); got {names}, the "
                f"backbone gives {sorted(input_shape)}")
        num_stages = int(names[0][len("pool"):])
        stage_channels = []
        for i in range(1, num_stages + 1):
            if f"conv{i}" not in input_shape:
                raise ConfigError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES: {names[0]} needs the encoder's "
                                  f"conv1..conv{num_stages}; it gives {sorted(input_shape)}")
            stage_channels.append(input_shape[f"conv{i}"].channels)
        convs = list(cfg.MODEL.VGG_ENCODER.CONVS_PER_STAGE)[:num_stages]
        if len(convs) != num_stages:
            raise ConfigError("MODEL.VGG_ENCODER.CONVS_PER_STAGE: one entry per stage (the SegNet "
                              "decoder mirrors it)")
        max_channels = head.SEGNET_MAX_CHANNELS
        feature_channels = stage_channels[0] if not max_channels else min(stage_channels[0], max_channels)
        return {
            "stage_channels": stage_channels,
            "convs_per_stage": convs,
            "norm": head.NORM,
            "max_channels": max_channels,
            "common": dict(
                in_feature=names[0], stride=1, feature_channels=feature_channels,
                num_classes=head.NUM_CLASSES, ignore_value=head.IGNORE_VALUE,
                loss_weight=head.LOSS_WEIGHT,
                long_tail=LongTailClassifier(cfg, head.NUM_CLASSES, feature_channels, spatial=True),
            ),
        }

    @classmethod
    def narrow_config(cls, cfg, channels):
        narrow = cfg.clone()
        narrow.defrost()
        narrow.MODEL.SEM_SEG_HEAD.SEGNET_MAX_CHANNELS = channels
        return narrow

    def unpool(self, x, features, stage):
        """Max-unpooling of ``x`` into encoder stage ``stage``'s map with its pooling indices."""
        return F.max_unpool2d(x, features[f"pool{stage}_indices"], kernel_size=2, stride=2,
                              output_size=features[f"conv{stage}"].shape[-2:])

    def decode(self, features, projected=None):
        x = features[self.in_feature]
        for k, convs in enumerate(self.decoder_stages):
            x = convs(self.unpool(x, features, self.num_stages - k))
        return x
