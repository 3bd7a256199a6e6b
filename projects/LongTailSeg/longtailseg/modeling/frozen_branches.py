"""Whether a branch's loss can change a trainable parameter.

A second stage (DisAlign on Mask R-CNN) freezes everything but a few parameters, and then the
RPN, box-regression, mask and keypoint losses reach none of them: computing those branches in
training costs time and memory for a loss that trains nothing. Their modules ask this before
running a loss-only part.
"""


def loss_can_train(modules, inputs):
    """True if a loss computed from ``modules`` applied to ``inputs`` (tensors) has a gradient
    for some trainable parameter: one of the modules' own, or one upstream of an input (the
    input then requires grad)."""
    return (any(p.requires_grad for module in modules for p in module.parameters())
            or any(x.requires_grad for x in inputs))
