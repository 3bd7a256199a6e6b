"""U-Net, U-Net++ and Attention U-Net decoders as LongTailSeg heads.

The decoders of U-Net (Ronneberger et al. 2015) and U-Net++ (Zhou et al. 2018) are
segmentation-models-pytorch's ``UnetDecoder`` and ``UnetPlusPlusDecoder`` (smp 0.6), used as
they are; its whole-model classes are split here into a Detectron2 backbone (the encoder,
``modeling/encoders.py``) and this head. Attention U-Net (Oktay et al. 2018) is smp's U-Net
decoder block with Oktay's additive attention gate on each skip connection (written here).
Every head ends in the 1x1 classifier and the ``LongTailClassifier`` (every loss, BLV, GRW,
DisAlign), as the other heads of this package, and serves as a MEDOE expert.

The heads read MODEL.SEM_SEG_HEAD.IN_FEATURES (finest first) and UNET_DECODER_CHANNELS (one
per decoder block, coarsest first). As in smp, a decoder with as many blocks as features ends
with a block without skip that upsamples 2x (encoders whose finest feature is at stride 2:
smp's); U-Net and Attention U-Net also take one block fewer, every block then fusing a skip
(the plain encoder's stride-1 ``conv1``, Ronneberger's layout). U-Net++'s decoder always has
as many blocks as features.

Choices where the papers' code differs from smp: upsampling is nearest-neighbour
interpolation before the block's two 3x3 conv-norm-ReLU (smp), not a transposed convolution;
no dropout before the classifier (none in the four papers).
"""
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ...errors import ConfigError
from ..long_tail_classifier import LongTailClassifier
from .decode_heads import _LongTailDecodeHead

# MODEL.SEM_SEG_HEAD.NORM -> smp's ``use_norm``.
SMP_NORMS = {"BN": "batchnorm", "": False}


def smp_norm(norm):
    if norm not in SMP_NORMS:
        raise ConfigError(f"MODEL.SEM_SEG_HEAD.NORM={norm!r}: the U-Net family's decoders (smp) take "
                          f"one of {sorted(SMP_NORMS)}")
    return SMP_NORMS[norm]


class _EncoderDecoderHead(_LongTailDecodeHead):
    """What the U-Net family shares: skips from IN_FEATURES, output stride, classifier."""

    @staticmethod
    def skip_from_config(cfg, input_shape, *, same_count_only=False):
        """IN_FEATURES' shapes and the decoder's channels, checked; the logits' stride."""
        head = cfg.MODEL.SEM_SEG_HEAD
        names = list(head.IN_FEATURES)
        missing = [n for n in names if n not in input_shape]
        if missing:
            raise ConfigError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES: the backbone has no {missing} "
                              f"(it gives {sorted(input_shape)})")
        strides = [input_shape[n].stride for n in names]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ConfigError("MODEL.SEM_SEG_HEAD.IN_FEATURES must be finest first, each at twice "
                              f"the stride of the one before (got strides {strides})")
        decoder_channels = list(head.UNET_DECODER_CHANNELS)
        allowed = {len(names)} if same_count_only else {len(names) - 1, len(names)}
        if len(decoder_channels) not in allowed:
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS has {len(decoder_channels)} blocks; with "
                f"{len(names)} IN_FEATURES use {' or '.join(map(str, sorted(allowed)))}")
        # A last block without skip upsamples the finest feature 2x.
        stride = strides[0] // 2 if len(decoder_channels) == len(names) else strides[0]
        if stride < 1:
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD: IN_FEATURES start at stride 1, so UNET_DECODER_CHANNELS "
                f"needs {len(names) - 1} blocks (one per skip), not {len(decoder_channels)}")
        common = dict(
            in_feature=names[-1], stride=stride, feature_channels=decoder_channels[-1],
            num_classes=head.NUM_CLASSES, ignore_value=head.IGNORE_VALUE,
            loss_weight=head.LOSS_WEIGHT,
            long_tail=LongTailClassifier(cfg, head.NUM_CLASSES, decoder_channels[-1], spatial=True),
        )
        return {
            "in_features": names,
            "encoder_channels": [input_shape[n].channels for n in names],
            "decoder_channels": decoder_channels,
            "norm": smp_norm(head.NORM),
            "common": common,
        }

    @classmethod
    def narrow_config(cls, cfg, channels):
        narrow = cfg.clone()
        narrow.defrost()
        head = narrow.MODEL.SEM_SEG_HEAD
        head.UNET_DECODER_CHANNELS = [min(c, channels) for c in head.UNET_DECODER_CHANNELS]
        return narrow

    def finish_init(self, in_features, common):
        self.in_features = list(in_features)
        self.init_head(**common)
        self.dropout = nn.Identity()  # none in U-Net, U-Net++, Attention U-Net or SegNet

    def decoder_inputs(self, features):
        """smp's decoder input: [stand-in for the encoder's identity feature, IN_FEATURES...].
        smp drops the first entry and reads only its size (the last block's target without
        skip, 2x the finest feature): an empty tensor of that size."""
        skips = [features[name] for name in self.in_features]
        n, _, h, w = skips[0].shape
        return [skips[0].new_empty(n, 0, 2 * h, 2 * w)] + skips


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailUNetHead(_EncoderDecoderHead):
    """U-Net's expanding path: smp's ``UnetDecoder`` (2x upsampling, concatenation with the skip,
    two 3x3 conv-norm-ReLU per block)."""

    @configurable
    def __init__(self, *, in_features, encoder_channels, decoder_channels, norm, common):
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        self.decoder = UnetDecoder([0] + list(encoder_channels), decoder_channels,
                                   n_blocks=len(decoder_channels), use_norm=norm)
        self.finish_init(in_features, common)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return cls.skip_from_config(cfg, input_shape)

    def decode(self, features, projected=None):
        return self.decoder(self.decoder_inputs(features))


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailUNetPlusPlusHead(_EncoderDecoderHead):
    """U-Net++'s nested, densely skip-connected decoder: smp's ``UnetPlusPlusDecoder``. It has
    as many blocks as IN_FEATURES, the last without skip (2x upsampling of the finest level)."""

    @configurable
    def __init__(self, *, in_features, encoder_channels, decoder_channels, norm, common):
        super().__init__()
        from segmentation_models_pytorch.decoders.unetplusplus.decoder import UnetPlusPlusDecoder

        self.decoder = UnetPlusPlusDecoder([0] + list(encoder_channels), decoder_channels,
                                           n_blocks=len(decoder_channels), use_norm=norm)
        self.finish_init(in_features, common)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return cls.skip_from_config(cfg, input_shape, same_count_only=True)

    def decode(self, features, projected=None):
        return self.decoder(self.decoder_inputs(features))


class AttentionGate(nn.Module):
    """Oktay et al.'s additive attention gate (their Eq. 1-2, one gate per skip):
    alpha = sigmoid(psi(ReLU(W_x x + W_g g))), output x * alpha, with 1x1 conv-BN for W_x, W_g and
    psi. The gating signal g is the coarser decoder feature brought to the skip's size (as in the
    common PyTorch Attention U-Net; the paper resamples the other way round, same gate)."""

    def __init__(self, skip_channels, gate_channels, inter_channels, use_norm=True):
        super().__init__()

        def conv_norm(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=not use_norm),
                                 nn.BatchNorm2d(cout) if use_norm else nn.Identity())

        self.w_x = conv_norm(skip_channels, inter_channels)
        self.w_g = conv_norm(gate_channels, inter_channels)
        self.psi = conv_norm(inter_channels, 1)

    def coefficients(self, skip, gate):
        """alpha (N, 1, H, W) in (0, 1) for the skip's pixels."""
        gate = F.interpolate(gate, size=skip.shape[-2:], mode="nearest")
        return torch.sigmoid(self.psi(F.relu(self.w_x(skip) + self.w_g(gate))))

    def forward(self, skip, gate):
        return skip * self.coefficients(skip, gate)


@SEM_SEG_HEADS_REGISTRY.register()
class LongTailAttentionUNetHead(_EncoderDecoderHead):
    """Attention U-Net: smp's U-Net decoder blocks, each skip multiplied by an
    :class:`AttentionGate` gated by the decoder feature coming up (inter channels: half the
    skip's, as Oktay et al.'s F_int)."""

    @configurable
    def __init__(self, *, in_features, encoder_channels, decoder_channels, norm, common):
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoderBlock

        skips = list(encoder_channels[::-1][1:])  # coarsest skip first, as the blocks use them
        skips += [0] * (len(decoder_channels) - len(skips))  # the last block without skip
        ins = [encoder_channels[-1]] + list(decoder_channels[:-1])
        self.blocks = nn.ModuleList([
            UnetDecoderBlock(i, s, o, use_norm=norm) for i, s, o in zip(ins, skips, decoder_channels)])
        self.gates = nn.ModuleList([
            AttentionGate(s, i, max(s // 2, 1), use_norm=bool(norm)) for i, s in zip(ins, skips) if s])
        self.finish_init(in_features, common)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return cls.skip_from_config(cfg, input_shape)

    def decode(self, features, projected=None):
        inputs = self.decoder_inputs(features)
        target, skips = inputs[0], inputs[1:][::-1]  # coarsest first
        x = skips[0]
        for i, block in enumerate(self.blocks):
            skip = skips[i + 1] if i + 1 < len(skips) else None
            size = (skip if skip is not None else target).shape[-2:]
            if skip is not None:
                skip = self.gates[i](skip, x)
            x = block(x, size[0], size[1], skip_connection=skip)
        return x
