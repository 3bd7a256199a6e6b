"""``Trainer``: Detectron2's DefaultTrainer with what long-tailed segmentation needs, usable from
one's own code with nothing else to set up."""
import logging
import random
import weakref

import numpy as np
import torch

import detectron2.utils.comm as comm
from detectron2.engine import DefaultTrainer
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler

from ..data.build import build_test_loader, build_train_loader
from ..evaluation import build_evaluator
from ..io import remove_leftovers
from ..modeling.extension_points import model_needs_test_labels
from . import stage2
from .checkpoint import CheckpointError, LongTailCheckpointer, check_complete_load
from .defaults import build_model, setup_logging, with_class_stats
from .hooks import LossIterationHook, RandomStateHook
from .launch import ddp_arguments
from .mixed_precision import MixedPrecisionTrainer, amp_precision
from .optimizer import build_optimizer
from .stops import StopHook, handling_stops

# What a scheduler's state dict holds besides progress is its schedule, which the config gives.
SCHEDULER_PROGRESS = {"optimizer", "base_lrs", "last_epoch", "_step_count", "_is_initial",
                      "_get_lr_called_within_step", "_last_lr"}


def _with_amp_enabled(cfg, enabled):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.AMP.ENABLED = enabled
    cfg.freeze()
    return cfg


class Trainer(DefaultTrainer):
    """DefaultTrainer with long-tail evaluators (head / body / tail tables), checked data loading,
    stage-2 freezing, exact resume, DeepLab's poly schedule and DDP that also runs on CPU
    processes.

    Given a config made by one's own code it does what ``tools/train_net.py``'s set-up does for
    its own: the class statistics are resolved (counted into OUTPUT_DIR/class_stats.json on first
    use) and LongTailSeg's logger writes to the console and OUTPUT_DIR/log.txt.
    """

    def __init__(self, cfg):
        setup_logging(cfg)
        cfg = with_class_stats(cfg)
        if cfg.SEED < 0:
            # A random run draws its seed once (the same on every process); its checkpoints keep it
            # (RandomStateHook) and --resume continues its data and random draws with it.
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SEED = comm.shared_random_seed()
            cfg.freeze()
        amp = amp_precision(cfg) if cfg.SOLVER.AMP.ENABLED else None  # (device type, dtype)
        with ddp_arguments(find_unused_parameters=cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS):
            # Detectron2's AMPTrainer is CUDA- and float16-only: DefaultTrainer builds the plain
            # trainer and ours takes it over (mixed_precision.py).
            super().__init__(_with_amp_enabled(cfg, False) if amp else cfg)
        if amp:
            self._trainer = MixedPrecisionTrainer.taking_over(self._trainer, device_type=amp[0],
                                                              precision=amp[1])
            self.cfg = _with_amp_enabled(self.cfg, True)

    @classmethod
    def build_model(cls, cfg):
        """The model of ``cfg`` (a second stage frozen); its weights are loaded by
        ``resume_or_load``."""
        return build_model(cfg, load_weights=False)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a DetectionCheckpointer just before this call; the hooks
        # (PeriodicCheckpointer) and resume_or_load use ours instead.
        self.checkpointer = LongTailCheckpointer(self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self._random_state = RandomStateHook(self.cfg.SEED)
        return super().build_hooks() + [LossIterationHook(), self._random_state]

    def resume_or_load(self, resume=True):
        """Detectron2's resume, made exact: the schedule follows this config (a larger
        SOLVER.MAX_ITER continues the poly decay), the data stream continues where the checkpoint
        left it; weights that do not fit (a second stage: but for the modules it trains) are
        refused. Every random draw of the model is a function of (SEED, process, iteration)
        (RandomStateHook), so resuming is exact with any number of processes."""
        resuming = resume and self.checkpointer.has_checkpoint()
        schedule = {k: v for k, v in vars(self.scheduler).items() if k not in SCHEDULER_PROGRESS}
        super().resume_or_load(resume=resume)
        if resuming:
            check_complete_load(self.checkpointer, self.checkpointer.get_checkpoint_file())
            vars(self.scheduler).update(schedule)
            self._resume_data_stream()
        elif stage2.is_stage2(self.cfg):
            # The checkpointer's model: under DDP self.model is the wrapper, whose names
            # start with "module." while the load reports the unwrapped names.
            check_complete_load(self.checkpointer, self.cfg.MODEL.WEIGHTS,
                                stage2.stage2_trainable_prefixes(self.checkpointer.model))

    def state_dict(self):
        # The optimizer's state (momentum) too: v0.6's DefaultTrainer saves only the iteration and
        # the hooks' states (later Detectron2 adds it under the same key).
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

    def _resume_data_stream(self):
        loader = self._trainer.data_loader
        sampler = getattr(loader, "position_sampler", None)
        if sampler is None:
            logging.getLogger("longtailseg").warning(
                f"DATALOADER.SAMPLER_TRAIN {self.cfg.DATALOADER.SAMPLER_TRAIN} restarts its data "
                "stream on resume (TrainingSampler and RepeatFactorTrainingSampler continue it exactly)")
            return
        loader.positioned_dataset.reseed(self._random_state.seed)  # the checkpoint's: SEED may be -1
        sampler.resume_after(self.start_iter, self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(),
                             loader.positioned_dataset, self.cfg.DATALOADER.ASPECT_RATIO_GROUPING)
        # The iterator made at construction already started at position 0.
        if isinstance(getattr(type(self._trainer), "_data_loader_iter", None), property):
            self._trainer._data_loader_iter_obj = None  # newer Detectron2 makes it on first use
        else:
            self._trainer._data_loader_iter = iter(loader)

    def train(self):
        """Detectron2's training loop; SIGINT and SIGTERM stop it after the current iteration with a
        checkpoint (``stops.py``), and what an interrupted run left in OUTPUT_DIR is removed first."""
        if comm.is_main_process():
            remove_leftovers(self.cfg.OUTPUT_DIR)
        if not any(isinstance(h, StopHook) for h in self._hooks):
            self.register_hooks([StopHook()])  # last: the iteration is complete when it runs
        try:
            with handling_stops():
                return super().train()
        except FloatingPointError as e:
            raise CheckpointError(
                f"training diverged: {str(e).strip().splitlines()[0]}; last_checkpoint in {self.cfg.OUTPUT_DIR} names the "
                "last finite checkpoint; lower SOLVER.BASE_LR or set SOLVER.CLIP_GRADIENTS.ENABLED "
                "True, then --resume"
            ) from None

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # Evaluation during training must not move the RNGs training continues with (a resumed
        # run does not repeat it).
        cfg = with_class_stats(cfg)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            results = super().test(cfg, model, evaluators)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        return results

    @classmethod
    def build_train_loader(cls, cfg):
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name, with_labels=model_needs_test_labels(cfg))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # SOLVER.OPTIMIZER (SGD or AdamW) and SOLVER.HEAD_LR_MULTIPLIER; Detectron2's SGD as before
        # with the defaults.
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # DeepLab's builder knows WarmupPolyLR and falls back to Detectron2's for the others.
        return build_deeplab_lr_scheduler(cfg, optimizer)
