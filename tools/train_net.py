#!/usr/bin/env python
"""Train and evaluate LongTailSeg models with Detectron2.

    python tools/train_net.py --config-file configs/synthetic/deeplab_v3_plus.yaml
    python tools/train_net.py --config-file configs/ade20k/deeplab_v3_plus_R_50.yaml --num-gpus 8
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth

Without CUDA, ``--num-gpus N`` runs N CPU processes joined by gloo.
"""
import logging
import os
import random
import sys
import weakref

import numpy as np
import torch
import yaml

import longtailseg  # noqa: F401  (registers datasets, heads and evaluators)
from longtailseg import add_longtailseg_config, model_zoo
from longtailseg.data.build import build_test_loader, build_train_loader
from longtailseg.data.class_counting import resolve_class_stats
from longtailseg.engine import launch, stage2
from longtailseg.data.preflight import check_data
from longtailseg.engine.checkpoint import (CheckpointError, LongTailCheckpointer, check_complete_load,
                                           check_output_dir, check_weights_file)
from longtailseg.engine.hooks import LossIterationHook, RandomStateHook
from longtailseg.engine.launch import ddp_arguments
from longtailseg.errors import ConfigError, LongTailSegError, one_line
from longtailseg.evaluation import build_evaluator
from longtailseg.io import write_text_atomically
from longtailseg.modeling.config_checks import check_model_config

import detectron2.utils.comm as comm
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.utils.logger import setup_logger

# What a scheduler's state dict holds besides progress is its schedule, which the config gives.
SCHEDULER_PROGRESS = {"optimizer", "base_lrs", "last_epoch", "_step_count", "_is_initial",
                      "_get_lr_called_within_step", "_last_lr"}


class Trainer(DefaultTrainer):
    """DefaultTrainer with long-tail evaluators, checked data loading, stage-2 freezing and DDP
    that also runs on CPU processes."""

    def __init__(self, cfg):
        with ddp_arguments(find_unused_parameters=cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS):
            super().__init__(cfg)

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        # Counted before stage 2 turns BatchNorm weights into FrozenBatchNorm2d buffers, so a
        # stage-2 model counts as its stage-1 model plus the stage-2 parameters.
        total = sum(p.numel() for p in model.parameters())
        model = stage2.prepare_stage2_model(model) if stage2.is_stage2(cfg) else model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logging.getLogger("longtailseg").info(f"model parameters: {total:,} ({trainable:,} trainable)")
        return model

    def build_hooks(self):
        # DefaultTrainer.__init__ made a DetectionCheckpointer just before this call; the hooks
        # (PeriodicCheckpointer) and resume_or_load use ours instead.
        self.checkpointer = LongTailCheckpointer(self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        return super().build_hooks() + [LossIterationHook(), RandomStateHook()]

    def resume_or_load(self, resume=True):
        """Detectron2's resume, made exact: the schedule follows this config (a larger
        SOLVER.MAX_ITER continues the poly decay), the data stream continues where the checkpoint
        left it; weights that do not fit a second stage are refused."""
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
        sampler.resume_after(self.start_iter, self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(),
                             loader.positioned_dataset, self.cfg.DATALOADER.ASPECT_RATIO_GROUPING)
        # The iterator made at construction already started at position 0.
        if isinstance(getattr(type(self._trainer), "_data_loader_iter", None), property):
            self._trainer._data_loader_iter_obj = None  # newer Detectron2 makes it on first use
        else:
            self._trainer._data_loader_iter = iter(loader)

    def train(self):
        try:
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
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # DeepLab's builder knows WarmupPolyLR and falls back to Detectron2's for the others.
        return build_deeplab_lr_scheduler(cfg, optimizer)


def load_config(args, freeze=True):
    """Config file + command-line overrides; an unknown key is a one-line ConfigError."""
    cfg = get_cfg()
    add_longtailseg_config(cfg)
    if not os.path.isfile(args.config_file):
        raise ConfigError(f"config file {args.config_file!r} does not exist; pass --config-file configs/...yaml")
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
    except AssertionError as e:
        if "odd length" in str(e):  # yacs: KEY without VALUE, or an --option after the overrides
            raise ConfigError(
                "command-line overrides must be KEY VALUE pairs, after every --option "
                f"(got {len(args.opts)} words: {' '.join(map(str, args.opts))})"
            ) from None
        raise ConfigError(
            f"{e.args[0]} (in {args.config_file} or the command line); fix the key's spelling "
            "(LongTailSeg's keys and defaults are in projects/LongTailSeg/longtailseg/config.py)"
        ) from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        raise ConfigError(
            f"{args.config_file}" + (f" line {where.line + 1}" if where else "")
            + f" is not valid YAML ({getattr(e, 'problem', None) or one_line(e)}); fix the file's syntax"
        ) from None
    except KeyError as e:  # yacs: an unknown key in a config file
        raise ConfigError(
            f"{e.args[0]} (in {args.config_file} or the command line); fix the key's spelling "
            "(LongTailSeg's keys and defaults are in projects/LongTailSeg/longtailseg/config.py)"
        ) from None
    except ValueError as e:  # yacs: a value of the wrong type, e.g. 1 for a float key
        raise ConfigError(
            f"{e.args[0]} (in {args.config_file} or the command line); give the value the type of "
            "the default in projects/LongTailSeg/longtailseg/config.py (e.g. 1.0, not 1)"
        ) from None
    if freeze:
        cfg.freeze()
    return cfg


def setup(args):
    """The run's config: loaded, logged, and with its class statistics resolved once (counted or
    reused, see ``resolve_class_stats``) before it is frozen; OUTPUT_DIR/config.yaml holds the
    resolved path."""
    cfg = load_config(args, freeze=False)
    check_model_config(cfg)  # before any data is read
    if stage2.is_stage2(cfg) and not args.eval_only:
        stage2.check_stage1_weights(cfg, resuming=args.resume)
    model_zoo.ensure_weights_available(cfg, resuming=args.resume)  # offline: names the file to fetch
    if args.eval_only:
        check_weights_file(cfg, resuming=args.resume)
    check_output_dir(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="longtailseg")
    if resolve_class_stats(cfg) and comm.is_main_process():
        write_text_atomically(cfg.dump(), os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
    if comm.is_main_process():
        check_data(cfg, eval_only=args.eval_only)
    comm.synchronize()
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = LongTailCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        check_complete_load(checkpointer, cfg.MODEL.WEIGHTS)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None):
    parser = default_argument_parser(epilog=__doc__.split("\n", 2)[2])
    parser.description = __doc__.split("\n", 1)[0]
    args = parser.parse_args(argv)
    print("Command Line Args:", args)
    try:
        load_config(args)  # a config error stops here, before any process is started
        return launch(main, args.num_gpus, num_machines=args.num_machines,
                      machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except LongTailSegError as e:  # on any process (launch raises the root cause)
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
