"""ME, the model ensemble of MEDOE's Table 5: N separately trained networks of one config, their
class probabilities averaged at inference (the paper's appendix: "a model ensemble with same
segmentation networks while averaging the outputs").

``SemSegModelEnsemble`` (``MODEL.META_ARCHITECTURE``) builds ``MODEL.MODEL_ENSEMBLE.MEMBER_CONFIG``
once per file of ``MEMBER_WEIGHTS`` and loads each member's ``model_final.pth`` itself, as data
only (``safe_files.load_torch``) and completely (a file that leaves a parameter or buffer of the
member unfilled, or fills it with another shape, is refused in one line). It evaluates only: the
members are trained by their own config, e.g. with different ``SEED`` and ``OUTPUT_DIR``.
"""
import logging
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable, get_cfg
from detectron2.modeling import META_ARCH_REGISTRY

from ...config import add_longtailseg_config
from ...errors import ConfigError
from ...safe_files import load_torch, merge_config_file
from ..extension_points import LongTailPart, second_stage

logger = logging.getLogger(__name__)


def member_config(cfg):
    """The config of every member: MEMBER_CONFIG read as data (safe YAML), on the ensemble's
    device and class statistics (the same training set)."""
    ensemble = cfg.MODEL.MODEL_ENSEMBLE
    if not ensemble.MEMBER_CONFIG:
        raise ConfigError("MODEL.MODEL_ENSEMBLE.MEMBER_CONFIG is empty; set it to the config the "
                          "members were trained with")
    member = get_cfg()
    add_longtailseg_config(member)
    merge_config_file(member, ensemble.MEMBER_CONFIG)
    if member.MODEL.META_ARCHITECTURE == SemSegModelEnsemble.__name__:
        raise ConfigError(f"MODEL.MODEL_ENSEMBLE.MEMBER_CONFIG {ensemble.MEMBER_CONFIG} is itself a model "
                          "ensemble; name the config of one member network")
    stage = second_stage(member)
    if stage is not None:
        raise ConfigError(f"MODEL.MODEL_ENSEMBLE.MEMBER_CONFIG {ensemble.MEMBER_CONFIG} is a second stage "
                          f"({stage.name}); ME averages first-stage networks: name their config")
    member.MODEL.DEVICE = cfg.MODEL.DEVICE
    member.MODEL.LONG_TAIL.CLASS_STATS = cfg.MODEL.LONG_TAIL.CLASS_STATS
    member.MODEL.WEIGHTS = ""
    member.freeze()
    return member


def load_member_weights(model, path):
    """Load a Detectron2 / LongTailSeg checkpoint (``{"model": state_dict, ...}``) into ``model``,
    read with ``torch.load(weights_only=True)``; refuse one that does not fill the model."""
    checkpoint = load_torch(path)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"MODEL.MODEL_ENSEMBLE.MEMBER_WEIGHTS: {path} holds no model state dict; "
                          "name the model_final.pth a member's training wrote")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    misshapen = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or misshapen:
        problem = (f"{len(missing)} of the member's parameters and buffers missing (e.g. {', '.join(missing[:3])})"
                   if missing else f"{len(misshapen)} of another shape (e.g. {', '.join(misshapen[:3])})")
        raise ConfigError(f"MODEL.MODEL_ENSEMBLE.MEMBER_WEIGHTS: {path} does not fit "
                          f"MEMBER_CONFIG's model: {problem}; name checkpoints trained with MEMBER_CONFIG")
    model.load_state_dict({k: state[k] for k in own})


@META_ARCH_REGISTRY.register()
class SemSegModelEnsemble(nn.Module, LongTailPart):
    """The members' softmax probabilities averaged: ``{"sem_seg": (C, H, W)}`` per image, as a
    semantic segmentor returns. Each member's ``sem_seg`` output is taken as logits (the CE
    networks the paper ensembles; a MEDOE member must keep ``ENSEMBLE: "none"``)."""

    # The config keys of the parts a meta-architecture builds (extension_points): the members
    # are asked through their own config when it is read.
    part_keys = ()

    @configurable
    def __init__(self, *, members: List[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"MODEL.MODEL_ENSEMBLE.MEMBER_WEIGHTS names {len(members)} checkpoint(s); "
                              "an ensemble averages two or more")
        self.members = nn.ModuleList(members)

    @classmethod
    def from_config(cls, cfg):
        member = member_config(cfg)
        weights = list(cfg.MODEL.MODEL_ENSEMBLE.MEMBER_WEIGHTS)
        if len(weights) < 2:
            raise ConfigError(f"MODEL.MODEL_ENSEMBLE.MEMBER_WEIGHTS names {len(weights)} checkpoint(s); "
                              "an ensemble averages two or more")
        members = []
        for path in weights:
            model = META_ARCH_REGISTRY.get(member.MODEL.META_ARCHITECTURE)(member)
            load_member_weights(model, path)
            members.append(model)
        logger.info(f"model ensemble: {len(members)} members of {cfg.MODEL.MODEL_ENSEMBLE.MEMBER_CONFIG} "
                    f"({', '.join(weights)})")
        return {"members": members}

    @classmethod
    def check_config(cls, cfg):
        member_config(cfg)

    @classmethod
    def loads_own_weights(cls, cfg):
        return True

    @property
    def device(self):
        return self.members[0].device

    def forward(self, batched_inputs):
        if self.training:
            raise ConfigError("a model ensemble (SemSegModelEnsemble) only evaluates: train each member "
                              "with MODEL.MODEL_ENSEMBLE.MEMBER_CONFIG, then pass --eval-only")
        total = None
        for member in self.members:
            outputs = member(batched_inputs)
            probs = [F.softmax(out["sem_seg"], dim=0) for out in outputs]
            total = probs if total is None else [t + p for t, p in zip(total, probs)]
        return [{"sem_seg": t / len(self.members)} for t in total]
