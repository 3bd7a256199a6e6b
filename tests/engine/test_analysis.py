"""FLOPs of a model's inference (``longtailseg.engine.analysis``) against hand counts."""
import torch
from torch import nn

from longtailseg.engine.analysis import count_inference_flops, output_tensors

from detectron2.structures import Boxes, Instances


class OneConvSegmentor(nn.Module):
    """A Detectron2-style model (list of dicts in, list of dicts out) of one 3x3 convolution."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
        self.linear = nn.Linear(8, 4, bias=False)

    def forward(self, inputs):
        image = inputs[0]["image"].float()[None]
        logits = self.conv(image)[0]
        scores = self.linear(torch.ones(2, 8))
        return [{"sem_seg": logits, "scores": scores}]


def test_flops_are_the_multiply_adds_of_the_convolution_and_linear_layers():
    model = OneConvSegmentor().train()
    flops = count_inference_flops(model, torch.zeros(3, 16, 20))
    conv = 5 * 3 * 3 * 3 * 16 * 20  # out channels x in channels x kernel x output pixels
    linear = 2 * 8 * 4
    assert flops == conv + linear
    assert model.training  # the mode is restored


def test_every_tensor_of_an_instances_output_is_traced():
    instances = Instances((4, 4), pred_boxes=Boxes(torch.zeros(2, 4)), scores=torch.ones(2))
    tensors = output_tensors([{"instances": instances, "extra": [torch.zeros(1)]}])
    assert len(tensors) == 3 and tensors[1].shape == (2, 4)
