"""Export a trained model to TorchScript and ONNX by tracing at a fixed input size
(``tools/export_model.py``; Detectron2's ``tools/deploy/export_model.py``, tracing method).

What is traced is the model's own inference of one image tensor (3, H, W), 0-255, in
``INPUT.FORMAT``'s channel order, at exactly the size it was traced at. So any backbone and
decode head, MEDOE's ensembles and DisAlign's calibration are exported with no code of their own:

* semantic segmentation (``SemanticSegmentor``, :class:`FixedSizeSemanticSegmentor`): the output
  is ``sem_seg`` (C, H, W), what ``model([{"image": image}])[0]["sem_seg"]`` returns: logits, or a
  MEDOE ensemble's probabilities. DisAlign's calibration (z + sigma(x) ((alpha - 1) z + beta)) is
  part of the head's forward, so its learned alpha, beta and confidence layer are in the graph;
* LVIS Mask R-CNN (``GeneralizedRCNN``): as Detectron2 exports it, ``model.inference(inputs,
  do_postprocess=False)``: the flattened Instances (boxes, classes, 28x28 ROI masks not pasted
  into the image, scores, image size; ``TracingAdapter.outputs_schema`` rebuilds them), the
  number of detections varying with the image (NMS and ROIAlign are torchvision's ops, which
  TorchScript runs and the ONNX exporter writes as RoiAlign and NonMaxSuppression).

Training-only parts do not reach the graph: the model is in eval mode (BLV's variation and the
losses only run in training), every dropout module is replaced by the identity before tracing and
functional dropout is removed from the traced graph;
``training_only_ops`` lists what a graph still holds of dropout or random sampling (tested empty).
"""
import importlib
import os
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

import detectron2
from detectron2.modeling import GeneralizedRCNN, SemanticSegmentor

from ..errors import ConfigError, LongTailSegError
from .defaults import build_model

FORMATS = ("torchscript", "onnx")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
ONNX_OPSET = 17
# Ops of dropout and random sampling in a TorchScript or ONNX graph: none may be exported.
TORCHSCRIPT_TRAINING_OPS = {"aten::dropout", "aten::dropout_", "aten::feature_dropout", "aten::alpha_dropout",
                            "aten::feature_alpha_dropout", "aten::bernoulli", "aten::bernoulli_", "aten::normal",
                            "aten::normal_", "aten::rand", "aten::rand_like", "aten::randn", "aten::randn_like",
                            "aten::uniform_", "aten::multinomial"}
ONNX_TRAINING_OPS = {"Dropout", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                     "Bernoulli", "Multinomial"}


def _tracing_adapter_class():
    """Detectron2's TracingAdapter. v0.6's ``detectron2/export/__init__.py`` imports caffe2 (its
    Caffe2 export), which PyTorch 2 no longer has; ``export/flatten.py`` itself needs only
    PyTorch, so it is then imported from a bare ``detectron2.export`` package (its submodules
    import; the Caffe2 names it would export stay unavailable, as they are anyway)."""
    try:
        from detectron2.export import TracingAdapter
        return TracingAdapter
    except ImportError as e:
        if "caffe2" not in str(e):
            raise
    package = types.ModuleType("detectron2.export")
    package.__path__ = [os.path.join(os.path.dirname(detectron2.__file__), "export")]
    sys.modules["detectron2.export"] = package
    package.TracingAdapter = importlib.import_module("detectron2.export.flatten").TracingAdapter
    return package.TracingAdapter


def check_exportable(cfg, export_format):
    """Refuse, in one line, a config ``export_format`` cannot export."""
    if export_format not in FORMATS:
        raise ConfigError(f"--format {export_format!r}; use one of {', '.join(FORMATS)}")
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in ("SemanticSegmentor", "GeneralizedRCNN"):
        raise ConfigError(f"MODEL.META_ARCHITECTURE {arch!r} cannot be exported; export_model.py "
                          "exports SemanticSegmentor (every decode head, MEDOE, DisAlign) and "
                          "GeneralizedRCNN (LVIS Mask R-CNN)")
    if arch == "SemanticSegmentor" and cfg.MODEL.SEM_SEG_HEAD.NAME == "MEDOEHead" and cfg.MODEL.MEDOE.ORACLE:
        raise ConfigError("MODEL.MEDOE.ORACLE True reads the test labels and cannot be exported; "
                          "set MODEL.MEDOE.ORACLE False (the ensemble of MODEL.MEDOE.ENSEMBLE is exported)")


def check_weights(cfg):
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise ConfigError("MODEL.WEIGHTS is empty; pass the trained model to export, e.g. "
                          "MODEL.WEIGHTS output/synthetic/deeplab_v3_plus/model_final.pth")
    if "://" not in weights and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS={weights} does not exist; train the model first or fix the path")


def without_dropout(model):
    """``model`` (in place) with every dropout replaced by the identity, as at evaluation."""
    for name, module in list(model.named_modules()):
        if isinstance(module, _DropoutNd):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, nn.Identity())
    return model


def exportable_model(cfg, export_format="torchscript"):
    """The trained model of ``cfg`` (MODEL.WEIGHTS loaded and checked, a second stage's too), in
    eval mode without dropout; ConfigError for what cannot be exported."""
    check_exportable(cfg, export_format)
    check_weights(cfg)
    return without_dropout(build_model(cfg).eval())


class FixedSizeSemanticSegmentor(nn.Module):
    """``SemanticSegmentor``'s inference of one image of a fixed size (3, H, W) -> ``sem_seg``
    (C, H, W), with ImageList's padding as constants.

    Traced through ``ImageList.from_tensors``, the padding is computed from tensors, so the ONNX
    exporter does not know any feature map's size and cannot write ops that need it (PSPNet's
    adaptive pooling). The steps are SemanticSegmentor's, for one image at the size it is
    traced at: normalise, pad with zeros to the backbone's size divisibility (or square size),
    backbone, head, crop back to H x W (``sem_seg_postprocess``'s resize to the same size is the
    identity). Any backbone and head: nothing of them is read but ``size_divisibility``.
    """

    def __init__(self, model, height, width):
        super().__init__()
        self.model = model
        self.height, self.width = height, width
        backbone = model.backbone
        constraints = getattr(backbone, "padding_constraints", None) or {}  # Detectron2 main
        square = constraints.get("square_size", 0)
        divisibility = constraints.get("size_divisibility", backbone.size_divisibility)
        padded_h, padded_w = (square, square) if square > 0 else (height, width)
        if divisibility > 1:
            padded_h, padded_w = (-(-padded_h // divisibility) * divisibility,
                                  -(-padded_w // divisibility) * divisibility)
        self.padding = (0, padded_w - width, 0, padded_h - height)

    def forward(self, image):
        if tuple(image.shape) != (3, self.height, self.width):
            raise ValueError(f"the exported model takes images (3, {self.height}, {self.width}), "
                             f"got {tuple(image.shape)}")
        x = (image - self.model.pixel_mean) / self.model.pixel_std
        x = F.pad(x, self.padding)[None] if any(self.padding) else x[None]
        results, _ = self.model.sem_seg_head(self.model.backbone(x), None)
        return results[0, :, : self.height, : self.width]


def _rcnn_inference(model, inputs):
    # Detectron2's export: the ROI masks, not pasted into the image (data-dependent sizes).
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def traceable(model, image):
    """The model's inference of one image (3, H, W) as a module of tensors: for a semantic
    segmentor :class:`FixedSizeSemanticSegmentor` at the image's size, for Mask R-CNN
    Detectron2's TracingAdapter (its ``outputs_schema`` rebuilds the Instances)."""
    if isinstance(model, SemanticSegmentor):
        return FixedSizeSemanticSegmentor(model, *image.shape[-2:]).eval()
    if not isinstance(model, GeneralizedRCNN):
        raise ConfigError(f"{type(model).__name__} cannot be exported (SemanticSegmentor or GeneralizedRCNN)")
    return _tracing_adapter_class()(model, [{"image": image}], _rcnn_inference).eval()


def export(model, image, export_format, output_dir):
    """Trace ``model`` on ``image`` and write ``output_dir``/model.ts or model.onnx; returns
    (path, the TracingAdapter: its ``outputs_schema`` rebuilds the model's outputs)."""
    adapter = traceable(model, image)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FILE_NAMES[export_format])
    with torch.no_grad():
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
        # Functional dropout (Detectron2's ASPP, timm and transformers backbones) is traced as
        # aten::dropout(train=False) even in eval mode: TorchScript's pass removes those nodes
        # (a private API, which the mobile optimizer runs too), module by module: each traced
        # submodule has its own forward graph.
        for module in traced.modules():
            if module._c._has_method("forward"):
                torch._C._jit_pass_remove_dropout(module._c)
        if export_format == "torchscript":
            traced.save(path)
        else:
            # The traced module, so ONNX holds the graph TorchScript holds (the TorchScript-based
            # exporter; torch.export cannot follow ImageList's data-dependent padding).
            try:
                torch.onnx.export(traced, (image,), path, dynamo=False, opset_version=ONNX_OPSET,
                                  input_names=["image"], output_names=output_names(adapter))
            except torch.onnx.errors.OnnxExporterError as e:
                reason = str(e).strip().splitlines()[0].split(" Please feel free")[0]
                raise ExportError(
                    f"ONNX cannot express this model at input size {tuple(image.shape[-2:])}: {reason} "
                    "(PSPNet's adaptive pooling needs a feature map divisible by every "
                    "MODEL.SEM_SEG_HEAD.PSP_POOL_SCALES entry: pick --size accordingly, e.g. a "
                    "multiple of 6 x the output stride; or use --format torchscript)") from None
    return path, adapter


def output_names(adapter):
    """``sem_seg`` for a semantic segmentor; for Mask R-CNN the Instances fields in the order
    TracingAdapter flattens them (sorted), then ``image_size``. Call after tracing."""
    if isinstance(adapter, FixedSizeSemanticSegmentor):
        return ["sem_seg"]
    instances = adapter.outputs_schema.schemas[0].schemas[0]  # list -> {"instances": ...}
    return list(instances.keys) + ["image_size"]


def load_exported(path):
    """A callable image (3, H, W) -> tuple of output tensors, for model.ts or model.onnx (onnxruntime)."""
    if path.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx(image):
            return tuple(torch.from_numpy(o) for o in session.run(None, {name: image.cpu().numpy()}))

        return run_onnx
    module = torch.jit.load(path, map_location="cpu")

    def run_torchscript(image):
        with torch.no_grad():
            out = module(image)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return run_torchscript


def eager_outputs(adapter, image):
    """The flattened outputs of the eager model for ``image``, in the exported order."""
    with torch.no_grad():
        out = adapter(image)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def max_difference(expected, actual):
    """Largest absolute difference over the outputs (inf when their number or shapes differ)."""
    if len(expected) != len(actual):
        return float("inf")
    diff = 0.0
    for e, a in zip(expected, actual):
        if e.shape != a.shape:
            return float("inf")
        if e.numel():
            diff = max(diff, (e.float() - a.float()).abs().max().item())
    return diff


def graph_ops(path):
    """Every op kind of an exported model.ts or model.onnx, those inside control flow included
    (TorchScript blocks of prim::If / prim::Loop, ONNX If / Loop / Scan subgraphs: e.g. NMS sits
    inside an If on the number of boxes)."""
    if path.endswith(".onnx"):
        import onnx

        def onnx_ops(graph):
            for node in graph.node:
                yield node.op_type
                for attribute in node.attribute:
                    subgraphs = list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else [])
                    for subgraph in subgraphs:
                        yield from onnx_ops(subgraph)

        return set(onnx_ops(onnx.load(path).graph))

    def torchscript_ops(block):
        for node in block.nodes():
            yield node.kind()
            for inner in node.blocks():
                yield from torchscript_ops(inner)

    return set(torchscript_ops(torch.jit.load(path, map_location="cpu").inlined_graph))


def training_only_ops(path):
    """The dropout and random-sampling ops in an exported model.ts or model.onnx."""
    training_ops = ONNX_TRAINING_OPS if path.endswith(".onnx") else TORCHSCRIPT_TRAINING_OPS
    return sorted(graph_ops(path) & training_ops)


class ExportError(LongTailSegError):
    """The model cannot be exported as asked (one line, exit status 2)."""


class ExportCheckError(LongTailSegError):
    """The exported model's output differs from eager PyTorch's, or its graph holds training ops."""
