"""Model config values that need no data, checked by ``tools/train_net.py`` right after the config
is read, so that a wrong value stops the run before class statistics are counted (minutes on a
real dataset). The builders call the same checks, for models built without the tool."""
from ..errors import ConfigError
from ..longtail.experts import ENSEMBLES


def check_blv_sigma(long_tail_cfg):
    if long_tail_cfg.BLV.ENABLED and long_tail_cfg.BLV.SIGMA < 0:
        raise ConfigError(f"MODEL.LONG_TAIL.BLV.SIGMA is {long_tail_cfg.BLV.SIGMA}; BLV's sigma must "
                          "be >= 0 (the authors use 4.0)")


def check_expert_channels(width):
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ConfigError(f"MODEL.MEDOE.EXPERT_CHANNELS={width!r}; use a whole number of channels "
                          ">= 1 for experts 2..K, or 0 for the head's width")


def check_ensemble(ensemble):
    if ensemble not in ENSEMBLES:
        raise ConfigError(f"MODEL.MEDOE.ENSEMBLE={ensemble!r}; use one of {list(ENSEMBLES)}")


def check_model_config(cfg):
    """Every check above that applies to ``cfg``'s model."""
    check_blv_sigma(cfg.MODEL.LONG_TAIL)
    if cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor" and cfg.MODEL.SEM_SEG_HEAD.NAME == "MEDOEHead":
        check_expert_channels(cfg.MODEL.MEDOE.EXPERT_CHANNELS)
        check_ensemble(cfg.MODEL.MEDOE.ENSEMBLE)
