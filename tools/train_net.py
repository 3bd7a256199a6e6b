#!/usr/bin/env python
"""Train and evaluate LongTailSeg models with Detectron2.

    python tools/train_net.py --config-file configs/synthetic/deeplab_v3_plus.yaml
    python tools/train_net.py --config-file configs/ade20k/deeplab_v3_plus_R_50.yaml --num-gpus 8
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth

Without CUDA, ``--num-gpus N`` runs N CPU processes joined by gloo.
"""
import logging
import os
import re
import sys
import weakref

from torch.multiprocessing import ProcessRaisedException

import longtailseg  # noqa: F401  (first: compatibility patches, then registration)
from longtailseg import add_longtailseg_config
from longtailseg.data.class_counting import load_or_compute_class_stats
from longtailseg.engine import launch, stage2
from longtailseg.engine import trainer as lt
from longtailseg.errors import ConfigError, LongTailSegError, one_line

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
)
from detectron2.engine.train_loop import TrainerBase
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.utils.logger import setup_logger


_OUR_ERROR_NAMES = re.compile(r"(DatasetError|ClassStatsError|ConfigError|LongTailSegError): ")


class Trainer(DefaultTrainer):
    """DefaultTrainer with long-tail evaluators, checked data loading and CPU-capable DDP."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with one change: our DDP wrapper (CPU processes, unused params).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        if lt.needs_class_stats(cfg):
            # Count (or load and check) the class statistics before the first step: it scans
            # every training label, so bad data stops the run now rather than hours later.
            load_or_compute_class_stats(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = lt.create_ddp_model(model, cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        checkpointer = stage2.StageTwoCheckpointer if stage2.is_stage2(cfg) else DetectionCheckpointer
        self.checkpointer = checkpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

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
        return super().build_hooks() + [lt.LossIterationHook()]

    @classmethod
    def build_train_loader(cls, cfg):
        return lt.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return lt.build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return lt.build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # DeepLab's builder knows WarmupPolyLR and falls back to Detectron2's for the others.
        return build_deeplab_lr_scheduler(cfg, optimizer)


def load_config(args):
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
    cfg.freeze()
    return cfg


def setup(args):
    cfg = load_config(args)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="longtailseg")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    if stage2.is_stage2(cfg):
        stage2.check_stage1_weights(cfg, resuming=args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        load_config(args)  # a config error stops here, before any process is started
        return launch(main, args.num_gpus, num_machines=args.num_machines,
                      machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except LongTailSegError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except ProcessRaisedException as e:  # a CPU worker process failed
        if _OUR_ERROR_NAMES.search(str(e)):
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    run()
