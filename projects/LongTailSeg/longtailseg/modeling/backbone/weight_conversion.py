"""Published ImageNet weights -> a checkpoint that ``MODEL.WEIGHTS`` loads into our backbones.

Two backbone families need a conversion (``tools/convert_pretrained_weights.py`` is the command):

* ``build_timm_backbone`` (ResNeSt, HRNet): the published file is timm's state dict of the
  classification model (``pytorch_model.bin`` / ``model.safetensors`` of the timm release, or a
  ``torch.save`` of ``timm.create_model(name, pretrained=True).state_dict()``). Our keys are timm's
  under ``backbone.body.`` (timm's feature wrappers keep the classification model's module
  names); the classifier and HRNet's classification head are dropped.
* Detectron2's ResNet (``build_resnet_deeplab_backbone``) with the deep stem (ResNet-50c / 101c):
  the published files are timm's ``resnet50c`` / ``resnet101c`` (``conv1.0``, ``conv1.1``, ...,
  ``bn1``, ``layer1.0.conv1``) or mmcv's ``resnet50_v1c`` / ``resnet101_v1c`` (``stem.0``, ...,
  ``stem.7``, ``layer1...``), and torchvision's basic-stem ResNets (``conv1``, ``bn1``); all are
  PyTorch-style (stride in the 3x3 conv) and take RGB images normalised by ImageNet's mean and
  std. Detectron2's own ``.pkl`` files (MSRA R-50 / R-101, DeepLab's R-103) need no conversion:
  Detectron2's checkpointer reads them.

Every backbone parameter and buffer must be filled with its shape (a file of another model is one
line naming the first keys that do not fit); the result is ``{"model": {name: tensor}}`` with the
full model's names (``backbone.`` ...), which Detectron2's checkpointer loads without heuristics.
Files are read as data only (``safe_files``; ``.safetensors`` by safetensors).
"""
import re
from collections import OrderedDict

import torch

from ...errors import ConfigError, UnreadableFileError
from ...safe_files import load_torch

LAYOUTS = ("auto", "timm", "mmcv", "torchvision")
# Wrappers a published checkpoint may put its state dict under (mmcv: "state_dict").
_WRAPPERS = ("state_dict", "model", "module")


def read_published_weights(path):
    """The state dict (name -> tensor) of a published weights file (.pth / .bin / .safetensors)."""
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:  # timm depends on safetensors; a bare install may lack it
            raise ConfigError(f"{path}: reading .safetensors needs the safetensors package "
                              "(pip install safetensors)") from None
        try:
            state = load_file(path, device="cpu")
        except Exception as e:
            raise UnreadableFileError(f"{path} cannot be read as safetensors ({type(e).__name__}); "
                                      "copy it again") from None
    else:
        state = load_torch(path)
    while isinstance(state, dict) and len(state) and not any(torch.is_tensor(v) for v in state.values()):
        wrapper = next((k for k in _WRAPPERS if k in state), None)
        if wrapper is None:
            break
        state = state[wrapper]
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise UnreadableFileError(f"{path} holds no state dict of tensors (looked under "
                                  f"{', '.join(_WRAPPERS)}); point --input at the published weights file")
    # DataParallel's "module." prefix
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def _check_complete(converted, target, source_name, hint):
    """Refuse a conversion that leaves a target tensor unfilled or of another shape."""
    missing = [k for k in target if k not in converted and not k.endswith("num_batches_tracked")]
    shapes = [f"{k} {tuple(converted[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in target.items() if k in converted and converted[k].shape != v.shape]
    if missing or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the backbone's tensors are not in it (e.g. {', '.join(missing[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} have another shape (e.g. {'; '.join(shapes[:2])})")
        raise ConfigError(f"{source_name} does not fit this config's backbone: {' and '.join(parts)}; {hint}")


def timm_to_backbone(state, backbone_state, source_name="the weights file"):
    """timm classification state dict -> ``{"body.<key>": tensor}`` for ``TimmBackbone``
    (``backbone_state``: its ``state_dict()``, the names and shapes to fill)."""
    converted = OrderedDict()
    for key in backbone_state:
        if not key.startswith("body."):
            continue
        source_key = key[len("body."):]
        if source_key in state:
            converted[key] = state[source_key]
    _check_complete(converted, backbone_state, source_name,
                    "convert the timm weights of MODEL.TIMM.NAME with the same MODEL.TIMM.MODEL_KWARGS")
    return converted


# Published deep-stem (3 x 3x3 conv) ResNet layouts -> Detectron2's DeepLabStem; basic stem too.
_STEMS = {
    "timm": {"conv1.0": "stem.conv1", "conv1.1": "stem.conv1.norm", "conv1.3": "stem.conv2",
             "conv1.4": "stem.conv2.norm", "conv1.6": "stem.conv3", "bn1": "stem.conv3.norm"},
    "mmcv": {"stem.0": "stem.conv1", "stem.1": "stem.conv1.norm", "stem.3": "stem.conv2",
             "stem.4": "stem.conv2.norm", "stem.6": "stem.conv3", "stem.7": "stem.conv3.norm"},
    "torchvision": {"conv1": "stem.conv1", "bn1": "stem.conv1.norm"},
}
_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(.+)$")


def detect_resnet_layout(state):
    if "stem.0.weight" in state:
        return "mmcv"
    if "conv1.0.weight" in state:
        return "timm"
    if "conv1.weight" in state:
        return "torchvision"
    raise ConfigError("the weights file is not a ResNet of timm, mmcv or torchvision layout (no "
                      "conv1.0 / stem.0 / conv1 weight); pass the published ImageNet ResNet")


def resnet_to_detectron2(state, backbone_state, layout="auto", source_name="the weights file"):
    """timm / mmcv / torchvision ResNet state dict -> Detectron2 ResNet names (``stem.conv1``,
    ``res2.0.conv1.norm``, ``res2.0.shortcut``, ...), checked against ``backbone_state``."""
    if layout == "auto":
        layout = detect_resnet_layout(state)
    stem = _STEMS[layout]
    converted = OrderedDict()
    for key, value in state.items():
        module, _, tensor = key.rpartition(".")
        if module in stem:
            converted[f"{stem[module]}.{tensor}"] = value
            continue
        match = _BLOCK.match(key)
        if not match:
            continue  # the classifier (fc), anything else of the classification model
        stage, block, part, rest = match.groups()
        if part.startswith("conv"):
            name = part
        elif part.startswith("bn"):
            name = f"conv{part[2:]}.norm"
        else:
            name = "shortcut" if part.endswith("0") else "shortcut.norm"
        converted[f"res{int(stage) + 1}.{block}.{name}.{rest}"] = value
    converted = OrderedDict((k, v) for k, v in converted.items() if k in backbone_state)
    _check_complete(converted, backbone_state, source_name,
                    "MODEL.RESNETS.{DEPTH, STEM_TYPE, STEM_OUT_CHANNELS} must be the file's "
                    "(ResNet-50c / 101c: STEM_TYPE deeplab, STEM_OUT_CHANNELS 64)")
    return converted


def convert_for_backbone(backbone, cfg, state, layout="auto", source_name="the weights file"):
    """``{"backbone.<name>": tensor}`` filling every tensor of ``backbone`` (built from ``cfg``)
    from the published ``state``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r}; use one of {list(LAYOUTS)}")
    target = backbone.state_dict()
    name = cfg.MODEL.BACKBONE.NAME
    if name == "build_timm_backbone":
        if layout not in ("auto", "timm"):
            raise ConfigError(f"{name} reads timm's weights; --layout {layout} is for ResNets")
        converted = timm_to_backbone(state, target, source_name)
    elif name in ("build_resnet_deeplab_backbone", "build_resnet_backbone"):
        if cfg.MODEL.RESNETS.STRIDE_IN_1X1:
            raise ConfigError("timm, mmcv and torchvision ResNets stride in the 3x3 conv; set "
                              "MODEL.RESNETS.STRIDE_IN_1X1 False (Detectron2's MSRA .pkl files need "
                              "no conversion)")
        converted = resnet_to_detectron2(state, target, layout, source_name)
    else:
        raise ConfigError(f"MODEL.BACKBONE.NAME={name!r}: no conversion is known; the converter "
                          "handles build_timm_backbone and Detectron2's ResNets")
    return OrderedDict((f"backbone.{k}", v.detach().clone().contiguous()) for k, v in converted.items())
