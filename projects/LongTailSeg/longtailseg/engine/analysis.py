"""FLOPs of a model's inference, counted by fvcore.

Detectron2 v0.6's ``detectron2.utils.analysis`` does not import without its C++ ops, so the model
is wrapped here as ``detectron2.export.TracingAdapter`` would: a module taking one image tensor
and returning the tensors of the model's output, which fvcore's ``FlopCountAnalysis`` traces.
fvcore counts one fused multiply-add as one flop (its documented convention, also Detectron2's
and mmcv's "FLOPs"), and only the operators it has handles for (convolutions, matmuls, norms,
upsampling...); elementwise operators are not counted.
"""
import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


def output_tensors(outputs):
    """Every tensor of a Detectron2 model's output (dicts, lists, ``Instances``, ``Boxes``), in a
    fixed order, so a tracer can follow them."""
    if torch.is_tensor(outputs):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in output_tensors(outputs[key])]
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in output_tensors(item)]
    if hasattr(outputs, "get_fields"):  # Instances
        return output_tensors(outputs.get_fields())
    if hasattr(outputs, "tensor"):  # Boxes, BitMasks
        return [outputs.tensor]
    return []


class _ImageToTensors(nn.Module):
    """``model([{"image": image}])`` as a module of one tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        height, width = image.shape[-2:]
        return tuple(output_tensors(self.model([{"image": image, "height": height, "width": width}])))


def count_inference_flops(model, image):
    """FLOPs (fvcore's count, see the module docstring) of ``model`` in evaluation mode on one
    ``image`` (a CHW tensor as the model's inputs hold it); the model's mode is restored."""
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(_ImageToTensors(model), (image,))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        model.train(was_training)
