"""The optimizer SOLVER.OPTIMIZER names: Detectron2's SGD, or AdamW for transformer backbones.

SegFormer's recipe (and MEDOE's for SegFormer on MiT-B3): AdamW, weight decay 0.01, no decay on
normalisation layers (MiT has no positional embedding to exempt), the decode head at 10x the
base learning rate, poly schedule with power 1. The head multiplier applies to every parameter
outside ``model.backbone``; the parameter groups keep Detectron2's (norm layers' decay, bias
factor), so the learning-rate schedule scales each group's rate alike.

With the defaults (SGD, multiplier 1) Detectron2's own ``build_optimizer`` is called unchanged.
"""
import logging

import torch

from detectron2.solver import build_optimizer as build_detectron2_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

from ..errors import ConfigError

OPTIMIZERS = ("SGD", "ADAMW")
ADAMW_BETAS = (0.9, 0.999)  # SegFormer's (mmsegmentation's AdamW defaults)


def check_optimizer_config(cfg):
    """Refuse an unknown SOLVER.OPTIMIZER or a non-positive SOLVER.HEAD_LR_MULTIPLIER."""
    name = cfg.SOLVER.OPTIMIZER
    if name.upper() not in OPTIMIZERS:
        raise ConfigError(f"SOLVER.OPTIMIZER is {name!r}; use one of {', '.join(OPTIMIZERS)}")
    if not cfg.SOLVER.HEAD_LR_MULTIPLIER > 0:
        raise ConfigError(f"SOLVER.HEAD_LR_MULTIPLIER is {cfg.SOLVER.HEAD_LR_MULTIPLIER}; give a "
                          "positive factor (1.0: the head at SOLVER.BASE_LR)")


def optimizer_param_groups(cfg, model):
    """Detectron2's parameter groups (``get_default_optimizer_params``: norm layers at
    SOLVER.WEIGHT_DECAY_NORM, biases by BIAS_LR_FACTOR / WEIGHT_DECAY_BIAS), each split into its
    backbone and non-backbone parameters, the latter at SOLVER.HEAD_LR_MULTIPLIER x its rate."""
    solver = cfg.SOLVER
    groups = get_default_optimizer_params(
        model, base_lr=solver.BASE_LR, weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM, bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS)
    multiplier = solver.HEAD_LR_MULTIPLIER
    if multiplier == 1.0:
        return groups
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ConfigError(f"SOLVER.HEAD_LR_MULTIPLIER is {multiplier} but {type(model).__name__} has no "
                          "backbone to tell the head from; set it to 1.0")
    in_backbone = {id(p) for p in backbone.parameters()}
    split = []
    for group in groups:
        options = {k: v for k, v in group.items() if k != "params"}
        body = [p for p in group["params"] if id(p) in in_backbone]
        head = [p for p in group["params"] if id(p) not in in_backbone]
        if body:
            split.append({"params": body, **options})
        if head:
            split.append({"params": head, **options, "lr": options["lr"] * multiplier})
    return split


def build_optimizer(cfg, model):
    """The optimizer of SOLVER.OPTIMIZER over ``optimizer_param_groups``, with Detectron2's
    gradient clipping (SOLVER.CLIP_GRADIENTS) around it."""
    check_optimizer_config(cfg)
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD" and cfg.SOLVER.HEAD_LR_MULTIPLIER == 1.0:
        return build_detectron2_optimizer(cfg, model)  # the configs written before this key
    params = optimizer_param_groups(cfg, model)
    solver = cfg.SOLVER
    logging.getLogger("longtailseg").info(
        f"optimizer {name}: base lr {solver.BASE_LR}, parameters outside the backbone at "
        f"{solver.HEAD_LR_MULTIPLIER}x, weight decay {solver.WEIGHT_DECAY} (norm layers "
        f"{solver.WEIGHT_DECAY_NORM}), {len(params)} parameter groups")
    if name == "SGD":
        return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
            params, lr=solver.BASE_LR, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV,
            weight_decay=solver.WEIGHT_DECAY)
    return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        params, lr=solver.BASE_LR, betas=ADAMW_BETAS, weight_decay=solver.WEIGHT_DECAY)
