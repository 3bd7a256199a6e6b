"""What every long-tail semantic-segmentation head adds to its logits: BLV in training,
DisAlign calibration, GRW class weights and the configured loss. The math lives in
``longtailseg.longtail``; this mixin only wires it to Detectron2 heads."""
import torch

from ...data.class_counting import load_or_compute_class_stats
from ...errors import ClassStatsError, ConfigError
from ...longtail.calibration import DisAlignCalibration, generalized_reweighting
from ...longtail.losses import get_loss
from ...longtail.variation import LogitVariation


class LongTailLogitsMixin:
    """Mix into a head before its Detectron2 base; call ``init_long_tail`` in ``__init__``."""

    @staticmethod
    def long_tail_from_config(cfg):
        lt = cfg.MODEL.LONG_TAIL
        needs_counts = lt.BLV.ENABLED or lt.GRW.ENABLED
        try:
            loss = get_loss(lt.LOSS.NAME)
        except KeyError as e:
            raise ConfigError(f"MODEL.LONG_TAIL.LOSS.NAME: {e.args[0]}") from None
        return {
            "class_counts": load_or_compute_class_stats(cfg).counts if needs_counts else None,
            "blv_sigma": lt.BLV.SIGMA if lt.BLV.ENABLED else None,
            "grw_rho": lt.GRW.RHO if lt.GRW.ENABLED else None,
            "disalign": lt.DISALIGN.ENABLED,
            "confidence_init_std": lt.DISALIGN.CONFIDENCE_INIT_STD,
            "loss": loss,
        }

    def init_long_tail(self, spec, num_classes, feature_channels):
        counts = spec.get("class_counts")
        if counts is not None and len(counts) != num_classes:
            raise ClassStatsError(
                f"the class statistics have {len(counts)} classes but the head predicts "
                f"{num_classes}; fix MODEL.SEM_SEG_HEAD.NUM_CLASSES or MODEL.LONG_TAIL.CLASS_STATS"
            )
        sigma = spec.get("blv_sigma")
        self.variation = LogitVariation(counts, sigma) if sigma is not None else None
        rho = spec.get("grw_rho")
        weights = generalized_reweighting(counts, rho) if rho is not None else None
        # Derived from the class statistics, so not saved in checkpoints.
        self.register_buffer("class_weights", weights, persistent=False)
        self.calibration = (
            DisAlignCalibration(num_classes, feature_channels, spatial=True,
                                confidence_init_std=spec.get("confidence_init_std", 0.01))
            if spec.get("disalign")
            else None
        )
        self.loss_fn = spec.get("loss") or get_loss("CE")

    def calibrate(self, logits, features):
        return logits if self.calibration is None else self.calibration(logits, features)

    def long_tail_loss(self, logits, targets):
        if self.variation is not None:
            logits = self.variation(logits)
        return self.loss_fn(logits, targets, class_weights=self.class_weights,
                            ignore_index=self.ignore_value)
