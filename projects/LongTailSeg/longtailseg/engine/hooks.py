"""Training hooks LongTailSeg adds to Detectron2's."""
from torch.nn.parallel import DistributedDataParallel

from detectron2.engine import HookBase


class LossIterationHook(HookBase):
    """Tells iteration-dependent losses (LDAM's deferred re-weighting) the current iteration."""

    def before_train(self):
        model = self.trainer.model
        model = model.module if isinstance(model, DistributedDataParallel) else model
        # Found once: the model's modules do not change during training.
        self._losses = [m for m in model.modules() if hasattr(m, "drw_start")]

    def before_step(self):
        for loss in self._losses:
            loss.iteration = self.trainer.iter
