"""Second stages (DisAlign, MEDOE's ensemble, MOE): freeze the stage-1 model, train a few parameters.

Freezing means no gradient for stage-1 parameters *and* no BatchNorm statistics updates: every
BatchNorm (SyncBN, naiveSyncBN) becomes Detectron2's FrozenBatchNorm2d, which normalises with the
stage-1 running statistics in training as in evaluation (the DisAlign authors' segmentation code
left BatchNorm in training mode, so its statistics kept moving).
"""
import logging
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import FrozenBatchNorm2d

from ..errors import ConfigError

logger = logging.getLogger(__name__)


def freeze_all_but(model, trainable_prefixes):
    """Freeze ``model`` in place except parameters whose names start with a trainable prefix.

    Returns the names of the parameters left trainable.
    """
    for name, child in list(model.named_children()):
        setattr(model, name, FrozenBatchNorm2d.convert_frozen_batchnorm(child))
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


def is_medoe_stage2(cfg):
    return cfg.MODEL.SEM_SEG_HEAD.NAME == "MEDOEHead" and cfg.MODEL.MEDOE.ENSEMBLE == "MOE"


def is_stage2(cfg):
    return cfg.MODEL.LONG_TAIL.DISALIGN.ENABLED or is_medoe_stage2(cfg)


def stage1_config(cfg):
    """The config that trains this stage 2's stage 1, as the config names it ("" = unknown)."""
    return cfg.MODEL.MEDOE.STAGE1_CONFIG if is_medoe_stage2(cfg) else cfg.MODEL.LONG_TAIL.DISALIGN.STAGE1_CONFIG


def stage2_trainable_prefixes(model):
    """Names of the modules a second stage trains: DisAlign calibrations, MEDOE's decision-maker."""
    from ..longtail.calibration import DisAlignCalibration
    from ..longtail.experts import MOEDecisionMaker

    return [name + "." for name, module in model.named_modules()
            if isinstance(module, (DisAlignCalibration, MOEDecisionMaker))]


def prepare_stage2_model(model):
    """Freeze a freshly built model for its second stage; logs what stays trainable."""
    trainable = freeze_all_but(model, stage2_trainable_prefixes(model))
    logger.info(f"stage 2: everything frozen (BatchNorm statistics too) but {trainable}")
    return model


def check_stage1_weights(cfg, resuming):
    """Stage 2 needs stage-1 weights: refuse to start from scratch, naming the command."""
    if resuming and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        return
    weights = cfg.MODEL.WEIGHTS
    if weights and (os.path.isfile(weights) or "://" in weights):
        return
    stage1 = stage1_config(cfg)
    how = (
        f"train stage 1 first with `python tools/train_net.py --config-file {stage1}`"
        if stage1
        else "train stage 1 first"
    )
    raise ConfigError(
        f"stage 2 needs stage-1 weights but MODEL.WEIGHTS={weights!r} "
        + ("is empty" if not weights else "does not exist")
        + f"; {how}, or set MODEL.WEIGHTS to its model_final.pth"
    )


class StageTwoCheckpointer(DetectionCheckpointer):
    """Loads stage-1 checkpoints into frozen models without noise in the log.

    FrozenBatchNorm2d has no ``num_batches_tracked`` buffer, so those stage-1 keys are dropped
    before loading; the log then lists exactly the new stage-2 parameters as missing.
    """

    def _load_model(self, checkpoint):
        own_keys = set(self.model.state_dict().keys())
        checkpoint["model"] = {
            k: v
            for k, v in checkpoint["model"].items()
            if not (k.endswith("num_batches_tracked") and k not in own_keys)
        }
        return super()._load_model(checkpoint)
