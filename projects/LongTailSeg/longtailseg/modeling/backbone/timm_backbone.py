"""Backbones from timm (``features_only``) as Detectron2 backbones: ResNeSt, HRNet, and any other
timm model with multi-scale features.

``MODEL.BACKBONE.NAME: "build_timm_backbone"`` builds ``MODEL.TIMM.NAME`` (e.g. ``resnest101e``,
ResNeSt-101 of Zhang et al. 2020; ``hrnet_w48`` / ``hrnet_w18``, HRNetV2 of Wang et al. 2020)
without its classifier. Its features are named as Detectron2's ResNet names them, by stage:
``stem`` (stride 2), ``res2`` ... ``res5`` (strides 4 ... 32; the later ones stay at the output
stride when ``MODEL.TIMM.OUTPUT_STRIDE`` dilates them), so every head that reads ``res2`` /
``res5`` (DeepLabV3+, FCN, PSPNet, OCRNet, MEDOE's experts) runs on them unchanged. With
``CONCAT_OUTPUT`` the backbone also returns ``concat``: every output upsampled to the finest and
concatenated, HRNetV2's representation that the OCRNet paper's head reads.

The timm model is randomly initialised: published ImageNet weights are converted once by
``tools/convert_pretrained_weights.py`` (timm's state dict -> these keys) and loaded through
``MODEL.WEIGHTS`` like Detectron2's own ImageNet checkpoints, so evaluating or fine-tuning a
trained model never needs the ImageNet file.
"""
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import CfgNode
from detectron2.layers import FrozenBatchNorm2d, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ...errors import ConfigError

# Detectron2's names of the stages timm's out_indices count: 0 = the stem's stride-2 output,
# 1..4 = the four stages (ResNet's layer1..4, HRNet's four branches).
STAGE_NAMES = ("stem", "res2", "res3", "res4", "res5")
CONCAT_FEATURE = "concat"
NORMS = ("BN", "SyncBN", "naiveSyncBN", "FrozenBN")


def _plain(value):
    """A config value as timm takes it: CfgNode -> dict, recursively."""
    if isinstance(value, CfgNode):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def timm_model_kwargs(timm_cfg):
    """Keyword arguments for ``timm.create_model`` from ``MODEL.TIMM`` (MODEL_KWARGS + stride)."""
    kwargs = _plain(timm_cfg.MODEL_KWARGS)
    if timm_cfg.OUTPUT_STRIDE != 32:  # HRNet accepts only the default
        kwargs["output_stride"] = timm_cfg.OUTPUT_STRIDE
    return kwargs


def convert_batchnorm(module, norm):
    """``module`` with every ``nn.BatchNorm2d`` replaced by Detectron2's ``norm`` (same statistics
    and affine parameters): SyncBN across GPUs, naiveSyncBN across CPU processes too, FrozenBN."""
    if norm == "BN":
        return module
    if isinstance(module, nn.BatchNorm2d):
        if norm == "FrozenBN":
            new = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        else:
            new = get_norm(norm, module.num_features)
            new.eps, new.momentum = module.eps, module.momentum
        with torch.no_grad():
            if module.affine:
                new.weight.copy_(module.weight)
                new.bias.copy_(module.bias)
            new.running_mean.copy_(module.running_mean)
            new.running_var.copy_(module.running_var)
        return new
    for name, child in module.named_children():
        replaced = convert_batchnorm(child, norm)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


class TimmBackbone(Backbone):
    """A timm ``features_only`` model whose outputs are named by stage (see the module docstring)."""

    def __init__(self, model_name, out_features, *, in_channels=3, model_kwargs=None, norm="BN",
                 concat_output=False):
        super().__init__()
        import timm

        unknown = [f for f in out_features if f not in STAGE_NAMES]
        if unknown or not out_features:
            raise ConfigError(f"MODEL.TIMM.OUT_FEATURES={list(out_features)}; use names among "
                              f"{list(STAGE_NAMES)}")
        if norm not in NORMS:
            raise ConfigError(f"MODEL.TIMM.NORM={norm!r}; use one of {list(NORMS)}")
        if not timm.is_model(model_name):
            raise ConfigError(f"MODEL.TIMM.NAME={model_name!r} is not a timm model; see "
                              "timm.list_models(), e.g. 'hrnet_w48' or 'resnest101e'")
        out_features = sorted(set(out_features), key=STAGE_NAMES.index)
        indices = tuple(STAGE_NAMES.index(f) for f in out_features)
        try:
            body = timm.create_model(model_name, pretrained=False, features_only=True,
                                     out_indices=indices, in_chans=in_channels, **(model_kwargs or {}))
        except (TypeError, ValueError, AssertionError, KeyError, IndexError) as e:
            raise ConfigError(f"timm cannot build {model_name!r} with MODEL.TIMM.MODEL_KWARGS="
                              f"{model_kwargs} and OUT_FEATURES={out_features} "
                              f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                              "fix those keys") from None
        self.body = convert_batchnorm(body, norm)
        info = body.feature_info
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(out_features, info.channels()))
        self._out_feature_strides = dict(zip(out_features, info.reduction()))
        self.concat_output = concat_output
        if concat_output:
            finest = min(out_features, key=self._out_feature_strides.get)
            self._out_features.append(CONCAT_FEATURE)
            self._out_feature_channels[CONCAT_FEATURE] = sum(info.channels())
            self._out_feature_strides[CONCAT_FEATURE] = self._out_feature_strides[finest]
        # Images are padded to the network's total reduction before dilation: HRNet's fusions
        # upsample by exact powers of 2, so their sizes must divide.
        self._size_divisibility = max(32, max(info.reduction()))

    @property
    def size_divisibility(self):
        return self._size_divisibility

    def forward(self, x):
        features = self.body(x)
        names = [f for f in self._out_features if f != CONCAT_FEATURE]
        out = dict(zip(names, features))
        if self.concat_output:
            # HRNetV2 (Wang et al. 2020, Sec. 3): all resolutions bilinearly upsampled to the
            # highest one and concatenated (mmsegmentation's resize_concat).
            size = max((f.shape[-2:] for f in features), key=lambda s: s[0] * s[1])
            out[CONCAT_FEATURE] = torch.cat(
                [f if f.shape[-2:] == size else
                 F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features],
                dim=1)
        return out


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape):
    """The backbone ``MODEL.TIMM`` describes (``MODEL.BACKBONE.NAME: "build_timm_backbone"``)."""
    timm_cfg = cfg.MODEL.TIMM
    if cfg.MODEL.BACKBONE.FREEZE_AT:
        raise ConfigError(f"MODEL.BACKBONE.FREEZE_AT={cfg.MODEL.BACKBONE.FREEZE_AT} is for Detectron2's "
                          "ResNet; build_timm_backbone trains every stage: set it to 0")
    return TimmBackbone(
        timm_cfg.NAME, list(timm_cfg.OUT_FEATURES), in_channels=input_shape.channels,
        model_kwargs=timm_model_kwargs(timm_cfg), norm=timm_cfg.NORM,
        concat_output=timm_cfg.CONCAT_OUTPUT,
    )
