"""Training hooks LongTailSeg adds to Detectron2's."""
import random

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.engine import HookBase

from ..longtail.losses import ClassificationLoss


class LossIterationHook(HookBase):
    """Tells every loss of the registry the current iteration (``set_iteration``: LDAM's deferred
    re-weighting uses it; the others declare nothing to do with it)."""

    def before_train(self):
        model = self.trainer.model
        model = model.module if isinstance(model, DistributedDataParallel) else model
        # Found once: the model's modules do not change during training.
        self._losses = [m for m in model.modules() if isinstance(m, ClassificationLoss)]

    def before_step(self):
        for loss in self._losses:
            loss.set_iteration(self.trainer.iter)


class RandomStateHook(HookBase):
    """Saves this process's Python, NumPy and torch RNG states in every checkpoint and restores
    them when training resumes, so that dropout, BLV's logit noise and every other draw of the
    model continue as in the uninterrupted run (each data sample has its own seed, see
    data/resumable.py).

    The states are applied in ``before_train``, after the trainer has built its data-loader
    iterator (which draws from torch's RNG), exactly where the uninterrupted run stood.
    Each process keeps its own states: in a run of several processes a checkpoint holds the main
    process's, which a resumed run gives to every process (the processes' own draws differ then).
    """

    def __init__(self):
        self._pending = None

    def state_dict(self):
        # Tensors, lists and numbers only: checkpoints are read with torch.load(weights_only=True).
        kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
        version, internal, gauss = random.getstate()
        state = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state(),
                 "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian]}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict):
        self._pending = state_dict

    def before_train(self):
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
