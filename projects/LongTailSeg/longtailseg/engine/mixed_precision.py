"""Mixed-precision training on any device: ``SOLVER.AMP.ENABLED`` with ``SOLVER.AMP.PRECISION``.

Detectron2 v0.6's ``AMPTrainer`` asserts CUDA and always autocasts to float16; Detectron2 main's
takes the dtype as an argument (``precision``) but still asserts CUDA. ``MixedPrecisionTrainer``
is its training step for the model's device: autocast to float16 with a gradient scaler (CUDA's
default; the scaler's state is in the trainer's state dict, so ``--resume`` continues its scale),
or to bfloat16 without one (the CPU's default: bfloat16 has float32's exponent range, so gradients
neither overflow nor underflow and there is nothing to scale). The long-tail losses and
statistics-derived tensors run in float32 inside the autocast region
(``longtailseg/longtail/precision.py``). Evaluation runs in float32, as Detectron2's does.
"""
import logging
import time

import torch

from detectron2.engine import AMPTrainer

from ..errors import ConfigError

logger = logging.getLogger(__name__)

PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}
# SOLVER.AMP.PRECISION "" = the device's usual mixed precision.
DEVICE_DEFAULTS = {"cuda": "float16", "cpu": "bfloat16"}


def amp_precision(cfg):
    """(device type, autocast dtype) of ``cfg``'s mixed precision; ConfigError naming
    SOLVER.AMP.PRECISION for a value or device it cannot use."""
    device = torch.device(cfg.MODEL.DEVICE).type
    name = cfg.SOLVER.AMP.PRECISION or DEVICE_DEFAULTS.get(device, "")
    if name not in PRECISIONS:
        raise ConfigError(f"SOLVER.AMP.PRECISION is {cfg.SOLVER.AMP.PRECISION!r}; use \"float16\", "
                          f"\"bfloat16\" or \"\" (float16 on CUDA, bfloat16 on the CPU) "
                          f"(MODEL.DEVICE {cfg.MODEL.DEVICE})")
    if device == "cuda" and name == "bfloat16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError("SOLVER.AMP.PRECISION is \"bfloat16\" but this GPU has no bfloat16; "
                          "use \"float16\" (with a gradient scaler)")
    return device, PRECISIONS[name]


class MixedPrecisionTrainer(AMPTrainer):
    """``AMPTrainer``'s step on ``device_type`` with autocast to ``precision``; a gradient scaler
    (``torch.amp.GradScaler``) for float16 only (for bfloat16 it is disabled: ``scale`` and
    ``step`` pass through and its state is empty)."""

    def __init__(self, model, data_loader, optimizer, *, device_type="cuda", precision=torch.float16):
        grad_scaler = torch.amp.GradScaler(device_type, enabled=precision == torch.float16)
        super().__init__(model, data_loader, optimizer, grad_scaler=grad_scaler)
        self.device_type, self.precision = device_type, precision

    @classmethod
    def taking_over(cls, trainer, *, device_type, precision):
        """A MixedPrecisionTrainer continuing ``trainer`` (a ``SimpleTrainer`` that
        ``DefaultTrainer`` built): same model, optimizer, loader and the loader's iterator, which
        a new trainer would start again (and its workers with it)."""
        amp = cls.__new__(cls)
        vars(amp).update(vars(trainer))
        amp.grad_scaler = torch.amp.GradScaler(device_type, enabled=precision == torch.float16)
        amp.device_type, amp.precision = device_type, precision
        logger.info(f"mixed precision: {device_type} autocast to {str(precision).replace('torch.', '')}"
                    + (", gradient scaler" if amp.grad_scaler.is_enabled() else " (no gradient scaler)"))
        return amp

    def run_step(self):
        """``AMPTrainer.run_step`` for the trainer's device and dtype."""
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(device_type=self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        if hasattr(self, "after_backward"):  # Detectron2 main's hooks have an after_backward
            self.after_backward()
        self._write_metrics(loss_dict, data_time)
        # Unscales first: SOLVER.CLIP_GRADIENTS (inside optimizer.step) sees the true gradients,
        # and a step with inf / nan gradients is skipped and the scale lowered.
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def load_state_dict(self, state_dict):
        if "grad_scaler" in state_dict:
            super().load_state_dict(state_dict)
            return
        # A checkpoint of a float32 run resumed with AMP on: the scaler starts afresh.
        super(AMPTrainer, self).load_state_dict(state_dict)
        if self.grad_scaler.is_enabled():
            logger.warning("the checkpoint has no gradient-scaler state (trained without "
                           "SOLVER.AMP.ENABLED); the scaler starts at its initial scale")
