"""What every long-tail semantic-segmentation head adds to its logits: BLV in training,
DisAlign calibration, GRW class weights and the configured loss. The math lives in
``longtailseg.longtail``; this mixin only wires it to Detectron2 heads."""
import torch

from ...data.class_counting import load_or_compute_class_stats
from ...errors import ClassStatsError, ConfigError
from ...longtail.calibration import DisAlignCalibration, generalized_reweighting
from ...longtail.losses import build_loss, loss_needs_class_counts
from ...longtail.variation import LogitVariation


class LongTailLogitsMixin:
    """Mix into a head before its Detectron2 base; call ``init_long_tail`` in ``__init__``."""

    @staticmethod
    def long_tail_from_config(cfg):
        lt = cfg.MODEL.LONG_TAIL
        try:
            loss_needs_counts = loss_needs_class_counts(lt.LOSS.NAME)
        except KeyError as e:
            raise ConfigError(f"MODEL.LONG_TAIL.LOSS.NAME: {e.args[0]}") from None
        needs_counts = lt.BLV.ENABLED or lt.GRW.ENABLED or loss_needs_counts
        counts = load_or_compute_class_stats(cfg).counts if needs_counts else None
        loss = build_loss(lt.LOSS.NAME, class_counts=counts if loss_needs_counts else None,
                          ignore_index=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                          **loss_options(lt.LOSS.NAME, lt.LOSS))
        return {
            "class_counts": counts,
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
        loss = spec.get("loss")
        # A submodule, so that its class-count buffers follow the head's device.
        self.loss_fn = build_loss("CE", ignore_index=self.ignore_value) if loss is None else loss

    def calibrate(self, logits, features):
        return logits if self.calibration is None else self.calibration(logits, features)

    def long_tail_loss(self, logits, targets):
        if self.variation is not None:
            logits = self.variation(logits)
        return self.loss_fn(logits, targets, class_weights=self.class_weights)


def loss_options(name, loss_cfg):
    """Keyword arguments of ``build_loss`` for loss ``name`` from MODEL.LONG_TAIL.LOSS."""
    return {
        "Focal": dict(gamma=loss_cfg.FOCAL_GAMMA),
        "CB": dict(beta=loss_cfg.CB_BETA),
        "CBFocal": dict(beta=loss_cfg.CB_BETA, gamma=loss_cfg.FOCAL_GAMMA),
        "LA": dict(tau=loss_cfg.LA_TAU),
        "LDAM": dict(max_margin=loss_cfg.LDAM_MAX_MARGIN, scale=loss_cfg.LDAM_SCALE,
                     drw_start=loss_cfg.LDAM_DRW_START if loss_cfg.LDAM_DRW_START >= 0 else None,
                     drw_beta=loss_cfg.LDAM_DRW_BETA),
        "Seesaw": dict(p=loss_cfg.SEESAW_P, q=loss_cfg.SEESAW_Q),
        "PAT": dict(tau=loss_cfg.PAT_TAU, constant=loss_cfg.PAT_CONSTANT or None,
                    detach_beta=loss_cfg.PAT_DETACH_BETA, max_exponent=loss_cfg.PAT_MAX_EXPONENT,
                    homogenize=loss_cfg.PAT_HOMOGENIZE),
    }.get(name, {})
