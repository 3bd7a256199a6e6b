"""Extension points: what the engine asks of a model before it is built, answered by the
registered parts the config names, never by testing their names.

A registered part (meta-architecture, semantic-segmentation head, proposal generator, ROI heads,
backbone) declares its answers as classmethods; :class:`LongTailPart` gives the defaults and the
documentation, and a class of Detectron2's that does not subclass it answers the defaults:

* ``needs_class_stats(cfg)``: it reads the file of MODEL.LONG_TAIL.CLASS_STATS when built, so the
  engine resolves (counts or reuses) the training split's statistics first;
* ``second_stage(cfg)``: a :class:`SecondStage` when the config makes it a second stage: the
  model is then built from stage-1 weights and frozen except the modules that declare
  ``trained_in_second_stage = True`` (``engine/stage2.py``);
* ``check_config(cfg)``: raise a one-line ``ConfigError`` for values that are wrong whatever the
  data (run right after the config is read, before any label is counted);
* ``needs_test_labels(cfg)``: its inference reads the labels (MEDOE's oracle);
* ``loads_own_weights(cfg)``: the model loads its trained weights itself when built (the model
  ensemble, from its members' checkpoints): it evaluates without MODEL.WEIGHTS and does not train.

The questions are asked through :func:`configured_parts`, which lists the registered classes a
config selects.
"""
from dataclasses import dataclass
from typing import List, Optional

from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    PROPOSAL_GENERATOR_REGISTRY,
    ROI_HEADS_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    GeneralizedRCNN,
    SemanticSegmentor,
)

from ..errors import ConfigError


@dataclass(frozen=True)
class SecondStage:
    """A part's declaration that the config makes the model a second stage."""

    name: str  # for messages: "DisAlign calibration", "MEDOE's MOE ensemble"
    stage1_config: str = ""  # the config that trains stage 1 ("" = not known)


class LongTailPart:
    """Defaults of the extension points; registered parts subclass it and override what applies."""

    @classmethod
    def needs_class_stats(cls, cfg) -> bool:
        return False

    @classmethod
    def second_stage(cls, cfg) -> Optional[SecondStage]:
        return None

    @classmethod
    def check_config(cls, cfg) -> None:
        pass

    @classmethod
    def needs_test_labels(cls, cfg) -> bool:
        return False

    @classmethod
    def loads_own_weights(cls, cfg) -> bool:
        return False


# The config keys naming the parts each Detectron2 meta-architecture builds (its from_config reads
# them). A meta-architecture of one's own declares ``part_keys`` the same way.
_PART_KEYS = {
    SemanticSegmentor: (("MODEL.SEM_SEG_HEAD.NAME", SEM_SEG_HEADS_REGISTRY),),
    GeneralizedRCNN: (("MODEL.PROPOSAL_GENERATOR.NAME", PROPOSAL_GENERATOR_REGISTRY),
                      ("MODEL.ROI_HEADS.NAME", ROI_HEADS_REGISTRY)),
}


def _registered(cfg, key, registry):
    name = cfg
    for part in key.split("."):
        name = getattr(name, part)
    if name not in registry:
        choices = ", ".join(sorted(n for n, _ in registry))
        raise ConfigError(f"{key}={name!r} is not registered in {registry._name}; use one of {choices}")
    return registry.get(name)


def configured_parts(cfg) -> List[type]:
    """The registered classes (or builder functions) ``cfg`` selects: meta-architecture,
    backbone, and the heads the meta-architecture builds; a one-line ConfigError for a name that
    is not registered."""
    meta_arch = _registered(cfg, "MODEL.META_ARCHITECTURE", META_ARCH_REGISTRY)
    parts = [meta_arch, _registered(cfg, "MODEL.BACKBONE.NAME", BACKBONE_REGISTRY)]
    keys = getattr(meta_arch, "part_keys", None)
    if keys is None:
        keys = next((k for arch, k in _PART_KEYS.items()
                     if isinstance(meta_arch, type) and issubclass(meta_arch, arch)), ())
    parts += [_registered(cfg, key, registry) for key, registry in keys]
    return parts


def _answers(cfg, question):
    for part in configured_parts(cfg):
        answer = getattr(part, question, None)
        if answer is not None:
            yield part, answer(cfg)


def model_needs_class_stats(cfg) -> bool:
    return any(needs for _, needs in _answers(cfg, "needs_class_stats"))


def second_stage(cfg) -> Optional[SecondStage]:
    """The second stage the config's parts declare, or None for a first stage."""
    return next((stage for _, stage in _answers(cfg, "second_stage") if stage is not None), None)


def check_model_config(cfg) -> None:
    """Every part's ``check_config``: values wrong whatever the data, before any is read."""
    for _ in _answers(cfg, "check_config"):
        pass


def model_needs_test_labels(cfg) -> bool:
    return any(needs for _, needs in _answers(cfg, "needs_test_labels"))


def model_loads_own_weights(cfg) -> bool:
    return any(loads for _, loads in _answers(cfg, "loads_own_weights"))
