"""Detectron2 main's config keys on Detectron2 v0.6: ``add_longtailseg_config`` adds every key of
main's defaults that v0.6 lacks (when absent, with main's default), so that a config dumped on
either version loads on the other. LongTailSeg implements some on v0.6 (sigmoid CE, the
federated loss, REPEAT_SQRT); the others have no reader there, and a value other than main's
default would be ignored without a word: it is refused instead."""
from detectron2.config import get_cfg

from ..errors import ConfigError

# Keys of Detectron2 main that nothing reads on Detectron2 v0.6, with main's defaults.
UNREAD_ON_V06 = {"SOLVER.BASE_LR_END": 0.0, "SOLVER.NUM_DECAYS": 3, "SOLVER.RESCALE_INTERVAL": False,
                 "FLOAT32_PRECISION": ""}


def _value(cfg, key):
    node = cfg
    for part in key.split("."):
        if not hasattr(node, part):
            return None, False
        node = getattr(node, part)
    return node, True


def check_detectron2_main_keys(cfg):
    """Refuse, in one line, a Detectron2-main-only key set to another value than main's default
    when the installed Detectron2 does not read it."""
    native = get_cfg()
    for key, default in UNREAD_ON_V06.items():
        if _value(native, key)[1]:
            continue  # this Detectron2 has (and reads) the key
        value, present = _value(cfg, key)
        if present and value != default:
            raise ConfigError(
                f"{key} is {value!r}, a key of Detectron2's main branch that the installed "
                f"Detectron2 does not read; remove it (default {default!r}) or install Detectron2 "
                "main (`make test-detectron2-main` builds it)")
