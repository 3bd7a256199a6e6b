"""Training hooks LongTailSeg adds to Detectron2's."""
import random

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

import detectron2.utils.comm as comm
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


def step_seed(seed, rank, iteration):
    """A 63-bit seed per (run seed, process, iteration), unrelated to the data samples' seeds
    (``SeedSequence([seed, position])``, data/resumable.py): a spawn key is mixed in after the
    entropy padded to its pool, so the two never take the same input."""
    sequence = np.random.SeedSequence(seed, spawn_key=(rank, iteration))
    return int(sequence.generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class RandomStateHook(HookBase):
    """Makes every random draw of iteration ``i`` on process ``r`` (dropout, proposal and
    mask sampling, BLV's logit noise, ...) a function of ``(seed, r, i)``: before each step the
    Python, NumPy and torch RNGs (CUDA's too) are seeded from it. A run resumed at any iteration
    then draws what the uninterrupted run drew, on one process or on as many as it had, from a
    checkpoint of the main process alone (saving the RNG states instead would hold only the main process's: the
    other processes' draws would change on resume). The data stream is a function of
    ``(seed, position)`` likewise (data/resumable.py).

    A checkpoint keeps the seed, so that a run whose SEED was drawn at random continues with it.
    """

    def __init__(self, seed):
        self.seed = int(seed)

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state_dict):
        # Checkpoints before the per-step seeding held RNG states, no seed: the config's applies.
        if "seed" in state_dict:
            self.seed = int(state_dict["seed"])

    def before_step(self):
        seed = step_seed(self.seed, comm.get_rank(), self.trainer.iter)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)  # every CUDA device's generator too
