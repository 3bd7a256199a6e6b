"""Second stages (DisAlign, MEDOE's ensemble, MOE): freeze the stage-1 model, train a few parameters.

Freezing makes the stage-1 part behave as in evaluation, in this one place for every stage 2:
no gradient for its parameters; every BatchNorm (SyncBN, naiveSyncBN) becomes Detectron2's
FrozenBatchNorm2d, which normalises with the stage-1 running statistics (the DisAlign authors'
segmentation code left BatchNorm in training mode, so its statistics kept moving); and every
dropout outside the trained modules (stochastic depth too: timm's DropPath, in MiT) becomes the
identity, as in evaluation, so the trained parameters see the features the model will have at
test time.
"""
import logging
import os

from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from detectron2.layers import FrozenBatchNorm2d

from ..errors import ConfigError
from ..modeling import extension_points

logger = logging.getLogger(__name__)


def freeze_all_but(model, trainable_prefixes):
    """Freeze ``model`` in place except parameters whose names start with a trainable prefix.

    Returns the names of the parameters left trainable.
    """
    for name, child in list(model.named_children()):
        setattr(model, name, FrozenBatchNorm2d.convert_frozen_batchnorm(child))
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d) and getattr(module, "num_batches_tracked", None) is None:
            module.register_load_state_dict_pre_hook(_drop_num_batches_tracked)
    from timm.layers import DropPath  # here: importing timm costs every tool's start 1-2 s

    frozen_dropouts = [name for name, module in model.named_modules()
                       if isinstance(module, (_DropoutNd, DropPath))
                       and not any(f"{name}.".startswith(prefix) for prefix in trainable_prefixes)]
    for name in frozen_dropouts:
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, nn.Identity())
    trainable = []
    for name, param in model.named_parameters():
        keep = any(name.startswith(prefix) for prefix in trainable_prefixes)
        param.requires_grad_(keep)
        if keep:
            trainable.append(name)
    if not trainable:
        raise ConfigError(
            f"stage 2 found no parameter under {list(trainable_prefixes)} to train; "
            "enable the stage-2 module in the config (e.g. MODEL.LONG_TAIL.DISALIGN.ENABLED)"
        )
    return trainable


def _drop_num_batches_tracked(module, state_dict, prefix, *args):
    """FrozenBatchNorm2d keeps no batch counter: a stage-1 checkpoint's counter is not an
    unexpected key (the load then lists exactly the new stage-2 parameters as missing)."""
    state_dict.pop(prefix + "num_batches_tracked", None)


def second_stage(cfg):
    """The :class:`~longtailseg.modeling.extension_points.SecondStage` a part of the config's
    model declares, or None for a first stage."""
    return extension_points.second_stage(cfg)


def is_stage2(cfg):
    return second_stage(cfg) is not None


def stage2_trainable_prefixes(model):
    """Names of the modules a second stage trains: those declaring ``trained_in_second_stage``
    (DisAlign's calibrations, MEDOE's decision-maker)."""
    return [name + "." for name, module in model.named_modules()
            if getattr(type(module), "trained_in_second_stage", False)]


def prepare_stage2_model(model):
    """Freeze a freshly built model for its second stage; logs what stays trainable."""
    trainable = freeze_all_but(model, stage2_trainable_prefixes(model))
    logger.info(f"stage 2: everything frozen (BatchNorm statistics too, dropout off) but {trainable}")
    return model


def check_stage1_weights(cfg, resuming):
    """Stage 2 needs stage-1 weights: refuse to start from scratch, naming the command."""
    if resuming and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        return
    weights = cfg.MODEL.WEIGHTS
    if weights and (os.path.isfile(weights) or "://" in weights):
        return
    stage = second_stage(cfg)
    stage1 = stage.stage1_config
    how = (
        f"train stage 1 first with `python tools/train_net.py --config-file {stage1}`"
        if stage1
        else "train stage 1 first"
    )
    raise ConfigError(
        f"stage 2 ({stage.name}) needs stage-1 weights but MODEL.WEIGHTS={weights!r} "
        + ("is empty" if not weights else "does not exist")
        + f"; {how}, or set MODEL.WEIGHTS to its model_final.pth"
    )
