"""MiT-B0 ... B5, SegFormer's Mix Transformer encoder (Xie et al., "SegFormer: Simple and
Efficient Design for Semantic Segmentation with Transformers", NeurIPS 2021), as a Detectron2
backbone (``MODEL.BACKBONE.NAME: "build_mit_backbone"``).

The network is segmentation-models-pytorch's ``MixVisionTransformer`` (already a dependency;
NVIDIA's code, kept by smp): its parameter names are those of the published NVlabs ImageNet
checkpoints ``mit_b*.pth``, which therefore load without renaming. The variants differ only in
widths and depths (SegFormer's Table 6 / its official configs); everything else is shared:
overlapping patch embeddings (7x7 stride 4, then 3x3 stride 2), efficient self-attention with
sequence reduction ratios 8 / 4 / 2 / 1, Mix-FFN with expansion 4, no positional embedding.

The four stages are named ``res2`` ... ``res5`` (strides 4, 8, 16, 32), as Detectron2 names a
ResNet's and Mask2Former its Swin's, so any head reading those names works on MiT.

Published weights come in three key formats; :func:`convert_mit_state_dict` maps each to this
backbone's (``tools/convert_mit_weights.py`` writes a file MODEL.WEIGHTS can name):

* ``nvlabs``: the official ``mit_b*.pth`` (and smp-hub's copies): the encoder's own names, plus an
  ImageNet classifier ``head.*`` that is dropped;
* ``huggingface``: ``nvidia/mit-b*`` (``SegformerForImageClassification``; transformers 4 names
  ``segformer.encoder.block.{stage}.{i}.attention.self.query ...``, and the names transformers 5
  saves, ``segformer.stages.{stage}.blocks.{i}.attention.q_proj ...``);
* ``mmseg``: mmsegmentation 1.x's converted checkpoints (``layers.{stage}.{0: patch embedding,
  1: blocks, 2: norm}``, attention as ``nn.MultiheadAttention``'s packed ``in_proj``, Mix-FFN as
  1x1 convolutions).
"""
import re
from collections import OrderedDict
from functools import lru_cache, partial

import torch

from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..errors import ConfigError

STAGE_NAMES = ("res2", "res3", "res4", "res5")
STAGE_STRIDES = (4, 8, 16, 32)

# Widths, depths and heads of SegFormer's six encoders (its official configs; smp's table).
MIT_VARIANTS = {
    "mit_b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "mit_b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "mit_b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "mit_b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "mit_b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "mit_b5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}
MIT_NUM_HEADS = (1, 2, 5, 8)
MIT_MLP_RATIOS = (4, 4, 4, 4)
MIT_SR_RATIOS = (8, 4, 2, 1)
# SegFormer's decode-head width for each encoder (its official configs): 256 for B0/B1, else 768.
SEGFORMER_HEAD_CHANNELS = {"mit_b0": 256, "mit_b1": 256}


def mit_architecture(mit_cfg):
    """(embed_dims, depths, num_heads) of MODEL.MIT: the VARIANT's, each replaced by EMBED_DIMS,
    DEPTHS, NUM_HEADS where given (tiny test models)."""
    variant = mit_cfg.VARIANT
    if variant not in MIT_VARIANTS:
        raise ConfigError(f"MODEL.MIT.VARIANT is {variant!r}; use one of {', '.join(MIT_VARIANTS)}")
    arch = MIT_VARIANTS[variant]
    embed_dims = tuple(mit_cfg.EMBED_DIMS) or arch["embed_dims"]
    depths = tuple(mit_cfg.DEPTHS) or arch["depths"]
    num_heads = tuple(mit_cfg.NUM_HEADS) or MIT_NUM_HEADS
    for key, values in (("EMBED_DIMS", embed_dims), ("DEPTHS", depths), ("NUM_HEADS", num_heads)):
        if len(values) != 4 or min(values) < 1:
            raise ConfigError(f"MODEL.MIT.{key} is {list(values)}; give four positive integers, one "
                              "per stage, or [] for the variant's")
    for stage, (dim, heads) in enumerate(zip(embed_dims, num_heads)):
        if dim % heads:
            raise ConfigError(f"MODEL.MIT: stage {stage + 1} has {dim} channels, not divisible by its "
                              f"{heads} heads; fix MODEL.MIT.EMBED_DIMS or MODEL.MIT.NUM_HEADS")
    return embed_dims, depths, num_heads


@lru_cache(maxsize=None)
def _efficient_attention_class():
    """smp's MiT attention computing softmax(q k^T * scale) v with
    ``F.scaled_dot_product_attention`` (fused kernels; on GPU no (N, N / R^2) matrix is kept)
    instead of explicit matrices: the same function, its parameters and names unchanged. Made on
    first use (one class), as importing segmentation-models-pytorch takes seconds."""
    import torch.nn.functional as F
    from segmentation_models_pytorch.encoders.mix_transformer import Attention

    class EfficientAttention(Attention):
        def forward(self, x, height, width):
            batch, tokens, channels = x.shape
            heads = self.num_heads
            q = self.q(x).reshape(batch, tokens, heads, channels // heads).transpose(1, 2)
            if self.sr_ratio > 1:  # sequence reduction: keys and values from an R x R strided conv
                x = x.transpose(1, 2).reshape(batch, channels, height, width)
                x = self.norm(self.sr(x).flatten(2).transpose(1, 2))
            k, v = self.kv(x).reshape(batch, -1, 2, heads, channels // heads).permute(2, 0, 3, 1, 4)
            # A stage 2 replaces the dropout by an Identity (no p): no dropout then.
            dropout = getattr(self.attn_drop, "p", 0.0) if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
            return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, channels)))

    return Attention, EfficientAttention


class MiTBackbone(Backbone):
    """SegFormer's Mix Transformer: four stages of (N, C_i, H / s_i, W / s_i) feature maps,
    s = 4, 8, 16, 32, each after its stage's LayerNorm."""

    def __init__(self, in_channels, embed_dims, depths, num_heads, drop_path_rate=0.1,
                 out_features=STAGE_NAMES):
        super().__init__()
        from segmentation_models_pytorch.encoders.mix_transformer import LayerNorm, MixVisionTransformer

        unknown = sorted(set(out_features) - set(STAGE_NAMES))
        if unknown or not out_features:
            raise ConfigError(f"MODEL.MIT.OUT_FEATURES: {unknown or 'none given'}; choose from {list(STAGE_NAMES)}")
        # The published encoders' settings: qkv bias, LayerNorm eps 1e-6 in the blocks and stage
        # norms (the patch embeddings keep 1e-5), no dropout, stochastic depth up to 0.1.
        self.mit = MixVisionTransformer(
            in_chans=in_channels, embed_dims=list(embed_dims), num_heads=list(num_heads),
            mlp_ratios=list(MIT_MLP_RATIOS), qkv_bias=True,
            norm_layer=partial(LayerNorm, eps=1e-6), depths=list(depths),
            sr_ratios=list(MIT_SR_RATIOS), drop_rate=0.0, drop_path_rate=drop_path_rate)
        # The attention through PyTorch's fused kernel (1.3x faster forward for MiT-B0 at 512 px on
        # a CPU; transformers' SegformerModel uses it too); the class is swapped on the built
        # modules, so their parameters, names and initialisation stay smp's.
        attention, efficient = _efficient_attention_class()
        for module in self.mit.modules():
            if type(module) is attention:
                module.__class__ = efficient
        self._out_features = [name for name in STAGE_NAMES if name in out_features]
        self._out_feature_channels = dict(zip(STAGE_NAMES, embed_dims))
        self._out_feature_strides = dict(zip(STAGE_NAMES, STAGE_STRIDES))

    def forward(self, x):
        stages = self.mit.forward_features(x)
        return {name: feature for name, feature in zip(STAGE_NAMES, stages) if name in self._out_features}

    @property
    def size_divisibility(self):
        # Inputs padded to a multiple of 32: every stage is exactly 1/stride of the padded image.
        return 32


@BACKBONE_REGISTRY.register()
def build_mit_backbone(cfg, input_shape):
    """MiT of MODEL.MIT (VARIANT mit_b0 ... mit_b5; widths and depths overridable)."""
    mit_cfg = cfg.MODEL.MIT
    embed_dims, depths, num_heads = mit_architecture(mit_cfg)
    return MiTBackbone(input_shape.channels, embed_dims, depths, num_heads,
                       drop_path_rate=mit_cfg.DROP_PATH_RATE, out_features=tuple(mit_cfg.OUT_FEATURES))


# ------------------------------------------------------------------ published weights -> ours

MIT_WEIGHT_FORMATS = ("nvlabs", "huggingface", "mmseg")

# transformers' names of one block's and one stage's tensors -> NVlabs' (suffixes after
# "block{s}.{i}." / "patch_embed{s}."): transformers 4 (the published files) and 5.
_HF_BLOCK_NAMES = [
    ("layer_norm_1.", "norm1."), ("layernorm_before.", "norm1."),
    ("layer_norm_2.", "norm2."), ("layernorm_after.", "norm2."),
    ("attention.self.query.", "attn.q."), ("attention.q_proj.", "attn.q."),
    ("attention.self.sr.", "attn.sr."), ("attention.sequence_reduction.sequence_reduction.", "attn.sr."),
    ("attention.self.layer_norm.", "attn.norm."), ("attention.sequence_reduction.layer_norm.", "attn.norm."),
    ("attention.output.dense.", "attn.proj."), ("attention.o_proj.", "attn.proj."),
    ("mlp.dense1.", "mlp.fc1."), ("mlp.fc1.", "mlp.fc1."),
    ("mlp.dense2.", "mlp.fc2."), ("mlp.fc2.", "mlp.fc2."),
    ("mlp.dwconv.dwconv.", "mlp.dwconv.dwconv."),
]
_HF_KEY_VALUE = {"attention.self.key.": "k", "attention.k_proj.": "k",
                 "attention.self.value.": "v", "attention.v_proj.": "v"}
_MMSEG_FFN = {"ffn.layers.0.": "mlp.fc1.", "ffn.layers.1.": "mlp.dwconv.dwconv.", "ffn.layers.4.": "mlp.fc2."}


def checkpoint_tensors(checkpoint):
    """The tensor dict of a loaded file: Detectron2's ``model``, mmseg/mmcv's ``state_dict``, or
    the dict itself; of a whole segmentor (NVlabs' or mmseg's SegFormer: ``backbone.*`` and
    ``decode_head.*``) the encoder's tensors, ``backbone.`` removed."""
    for key in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    tensors = {k: v for k, v in checkpoint.items() if torch.is_tensor(v)}
    if any(k.startswith("backbone.") for k in tensors):
        tensors = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    return tensors


def detect_mit_weight_format(state_dict):
    """Which published format ``state_dict``'s names are in (one of MIT_WEIGHT_FORMATS)."""
    keys = list(state_dict)
    if any(k.startswith("block1.") or k.startswith("patch_embed1.") for k in keys):
        return "nvlabs"
    if any(re.search(r"(^|\.)(encoder\.block|stages)\.\d+\.", k) for k in keys):
        return "huggingface"
    if any(k.startswith("layers.0.") for k in keys):
        return "mmseg"
    raise ValueError("the file holds no MiT encoder in a known format (NVlabs mit_b*.pth, Hugging Face "
                     "nvidia/mit-b*, mmsegmentation): its first keys are " + ", ".join(keys[:3]))


def _from_huggingface(state_dict):
    out, pending = OrderedDict(), {}
    for key, value in state_dict.items():
        key = re.sub(r"^(segformer\.|model\.)", "", key)
        if key.startswith(("classifier.", "decode_head.")):
            continue  # the ImageNet classifier / a segmentation head: not the encoder
        m = re.match(r"(?:encoder\.patch_embeddings\.(\d+)|stages\.(\d+)\.patch_embeddings)\.(.*)", key)
        if m:
            stage = int(m.group(1) or m.group(2)) + 1
            out[f"patch_embed{stage}." + m.group(3).replace("layer_norm.", "norm.")] = value
            continue
        m = re.match(r"(?:encoder\.layer_norm\.(\d+)|stages\.(\d+)\.layer_norm)\.(.*)", key)
        if m:
            out[f"norm{int(m.group(1) or m.group(2)) + 1}.{m.group(3)}"] = value
            continue
        m = re.match(r"(?:encoder\.block\.(\d+)|stages\.(\d+)\.blocks)\.(\d+)\.(.*)", key)
        if not m:
            raise ValueError(f"unexpected Hugging Face MiT key {key}")
        prefix, rest = f"block{int(m.group(1) or m.group(2)) + 1}.{m.group(3)}.", m.group(4)
        for hf, ours in _HF_KEY_VALUE.items():
            if rest.startswith(hf):  # NVlabs packs key and value in one linear "kv": [k; v]
                pending.setdefault(prefix + "attn.kv." + rest[len(hf):], {})[ours] = value
                break
        else:
            for hf, ours in _HF_BLOCK_NAMES:
                if rest.startswith(hf):
                    out[prefix + ours + rest[len(hf):]] = value
                    break
            else:
                raise ValueError(f"unexpected Hugging Face MiT key {key}")
    for key, parts in pending.items():
        if set(parts) != {"k", "v"}:
            raise ValueError(f"Hugging Face MiT file has only the {next(iter(parts))} half of {key}")
        out[key] = torch.cat([parts["k"], parts["v"]], dim=0)
    return out


def _from_mmseg(state_dict):
    out = OrderedDict()
    for key, value in state_dict.items():
        m = re.match(r"layers\.(\d+)\.(\d)\.(.*)", key)
        if not m:
            if key.startswith(("head.", "decode_head.", "auxiliary_head.")):
                continue
            raise ValueError(f"unexpected mmsegmentation MiT key {key}")
        stage, part, rest = int(m.group(1)) + 1, int(m.group(2)), m.group(3)
        if part == 0:  # patch embedding
            out[f"patch_embed{stage}." + rest.replace("projection.", "proj.")] = value
        elif part == 2:  # the stage's norm
            out[f"norm{stage}.{rest}"] = value
        else:
            block, rest = rest.split(".", 1)
            prefix = f"block{stage}.{block}."
            if rest.startswith("attn.attn.in_proj_"):  # packed [q; k; v] -> q and kv
                kind = rest[len("attn.attn.in_proj_"):]
                dim = value.shape[0] // 3
                out[prefix + "attn.q." + kind] = value[:dim]
                out[prefix + "attn.kv." + kind] = value[dim:]
            elif rest.startswith("attn.attn.out_proj."):
                out[prefix + "attn.proj." + rest[len("attn.attn.out_proj."):]] = value
            elif rest.startswith("ffn.layers."):
                name = next((ours for mm, ours in _MMSEG_FFN.items() if rest.startswith(mm)), None)
                if name is None:
                    raise ValueError(f"unexpected mmsegmentation MiT key {key}")
                tensor_name = rest.split(".")[-1]
                if name != "mlp.dwconv.dwconv." and value.dim() == 4:
                    value = value.flatten(1)  # 1x1 conv -> linear
                out[prefix + name + tensor_name] = value
            else:  # norm1, norm2, attn.sr, attn.norm keep their names
                out[prefix + rest] = value
    return out


def convert_mit_state_dict(checkpoint, source="auto"):
    """The MiT encoder tensors of a published checkpoint (a loaded file: a tensor dict, or one
    under ``model`` / ``state_dict``), renamed to NVlabs' names, which ``MiTBackbone.mit`` uses;
    ``source`` is one of MIT_WEIGHT_FORMATS or "auto" (detected from the names). Classifier and
    decode-head tensors are dropped."""
    state_dict = checkpoint_tensors(checkpoint)
    fmt = detect_mit_weight_format(state_dict) if source == "auto" else source
    if fmt == "nvlabs":
        return OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith("head."))
    if fmt == "huggingface":
        return _from_huggingface(state_dict)
    if fmt == "mmseg":
        return _from_mmseg(state_dict)
    raise ValueError(f"unknown MiT weight format {source!r}; use one of auto, {', '.join(MIT_WEIGHT_FORMATS)}")


def mit_weights_for_detectron2(checkpoint, source="auto", prefix="backbone.mit."):
    """A Detectron2 checkpoint dict ({"model": ...}) of the published MiT weights, named as in a
    model built with ``build_mit_backbone`` (``MODEL.WEIGHTS`` loads them; the heads stay as
    initialised)."""
    converted = convert_mit_state_dict(checkpoint, source)
    return {"model": OrderedDict((prefix + k, v) for k, v in converted.items()),
            "__author__": "LongTailSeg tools/convert_mit_weights.py"}


def mit_architecture_of(state_dict):
    """(variant name or None, embed_dims, depths) of converted MiT weights (NVlabs names)."""
    embed_dims, depths = [], []
    for stage in range(1, 5):
        weight = state_dict.get(f"patch_embed{stage}.proj.weight")
        if weight is None:
            raise ValueError(f"the MiT weights lack stage {stage} (patch_embed{stage}.proj.weight)")
        embed_dims.append(weight.shape[0])
        blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith(f"block{stage}.")}
        depths.append(max(blocks) + 1 if blocks else 0)
    embed_dims, depths = tuple(embed_dims), tuple(depths)
    variant = next((name for name, arch in MIT_VARIANTS.items()
                    if arch["embed_dims"] == embed_dims and arch["depths"] == depths), None)
    return variant, embed_dims, depths


def check_mit_weights(state_dict):
    """Load converted weights (NVlabs names) strictly into a MiT of their shape: every tensor
    must fit and none may be missing. Returns the variant name (None for a custom shape)."""
    variant, embed_dims, depths = mit_architecture_of(state_dict)
    # The number of heads shapes no tensor: one head per stage fits any width.
    backbone = MiTBackbone(3, embed_dims, depths, (1, 1, 1, 1))
    missing, unexpected = backbone.mit.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(f"the converted weights do not fit a MiT with channels {list(embed_dims)} and "
                         f"blocks {list(depths)}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return variant
