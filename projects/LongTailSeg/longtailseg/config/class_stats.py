"""What a config says about class statistics: the file it names and whether its long-tail policy
needs class counts. Heads, box predictors and evaluators ask these; ``engine`` resolves the file
once per run (``longtailseg.engine.resolve_class_stats``) before anything asks."""
from ..errors import ClassStatsError, ConfigError
from ..longtail import class_stats as cs
from ..longtail.losses import loss_needs_class_counts


def long_tail_needs_class_counts(cfg):
    """True when the long-tail policy asks for class counts (BLV, GRW, a loss that declares
    ``needs_class_counts``; for boxes also the federated loss's image counts and NorCal)."""
    long_tail = cfg.MODEL.LONG_TAIL
    try:
        loss_counts = loss_needs_class_counts(long_tail.LOSS.NAME)
    except KeyError as e:
        raise ConfigError(f"MODEL.LONG_TAIL.LOSS.NAME: {e.args[0]}") from None
    box_head = cfg.MODEL.ROI_BOX_HEAD
    box_counts = box_head.USE_FED_LOSS or box_head.NORCAL.ENABLED
    return long_tail.BLV.ENABLED or long_tail.GRW.ENABLED or loss_counts or box_counts


def class_stats_from_config(cfg):
    """The statistics file MODEL.LONG_TAIL.CLASS_STATS names (heads and evaluators only load)."""
    path = cfg.MODEL.LONG_TAIL.CLASS_STATS
    if not path:
        raise ClassStatsError(
            "MODEL.LONG_TAIL.CLASS_STATS is empty but this model needs class statistics; "
            "longtailseg.engine's Trainer and build_model fill it in before building the model "
            "(counting the training split once), or set it to a file made by "
            "tools/compute_class_stats.py"
        )
    return cs.load(path)
