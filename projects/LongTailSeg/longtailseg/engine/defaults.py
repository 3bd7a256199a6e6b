"""The recipe every entry point shares: load a config, resolve its class statistics, set a run up,
and build the model a config describes (stage-2 freezing, weights loaded and checked).

``tools/train_net.py``, ``tools/demo.py``, ``tools/benchmark_training.py``,
``longtailseg.model_zoo.get`` and the tests all go through these functions, so a second stage is
frozen and its weights checked the same way everywhere.
"""
import logging
import os

from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.modeling import build_model as build_detectron2_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .. import data
from ..config import add_longtailseg_config, check_detectron2_main_keys
from ..data.datasets import is_sem_seg_dataset
from ..data.preflight import check_data
from ..errors import ConfigError
from ..io import write_text_atomically
from ..safe_files import merge_config_file
from ..modeling.extension_points import check_model_config, model_loads_own_weights, model_needs_class_stats
from . import run_folder, stage2
from .config_checks import check_run_config
from .checkpoint import LongTailCheckpointer, check_complete_load, check_output_dir, check_weights_file
from .weights import check_local_weights, ensure_weights_available

logger = logging.getLogger(__name__)
_KEYS_HELP = "LongTailSeg's keys and defaults: docs/CONFIG_REFERENCE.md, or longtailseg/config/defaults.py"


def load_config(config_file, opts=(), freeze=True, add_config=()):
    """Detectron2's config with LongTailSeg's keys (and those each function of ``add_config``
    adds: a project of one's own), the file (read as data only: a YAML Python tag is refused, see
    ``safe_files``) and ``KEY VALUE`` overrides merged; a missing file, bad YAML, unknown key or
    value of the wrong type is a one-line ConfigError."""
    cfg = get_cfg()
    add_longtailseg_config(cfg)
    for add in add_config:
        add(cfg)
    opts = list(opts or [])
    merge_config_file(cfg, config_file)  # safe YAML only; its errors are one line already
    try:
        cfg.merge_from_list(opts)
    except AssertionError as e:
        if "odd length" in str(e):  # yacs: KEY without VALUE, or an --option after the overrides
            raise ConfigError(
                "command-line overrides must be KEY VALUE pairs, after every --option "
                f"(got {len(opts)} words: {' '.join(map(str, opts))})"
            ) from None
        raise ConfigError(f"{e.args[0]} (on the command line); fix the key's spelling ({_KEYS_HELP})") from None
    except KeyError as e:  # yacs: an unknown key
        raise ConfigError(f"{e.args[0]} (on the command line); fix the key's spelling ({_KEYS_HELP})") from None
    except ValueError as e:  # yacs: a value of the wrong type, e.g. 1 for a float key
        raise ConfigError(
            f"{e.args[0]} (on the command line); give the value the type of the default "
            f"({_KEYS_HELP}; e.g. 1.0, not 1)"
        ) from None
    if freeze:
        cfg.freeze()
    return cfg


def class_stats_needed(cfg):
    """Whether a run of ``cfg`` reads class statistics: a part of its model declares it (see
    ``modeling/extension_points.py``), or it trains or evaluates semantic segmentation (evaluated
    by class group; counting the split checks every training label before the first step)."""
    datasets = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    return model_needs_class_stats(cfg) or any(is_sem_seg_dataset(name) for name in datasets)


def resolve_class_stats(cfg):
    """Fill MODEL.LONG_TAIL.CLASS_STATS (``cfg`` not frozen) with the statistics file the run uses,
    counted or reused as ``longtailseg.data.resolve_class_stats`` decides; "" when the run reads
    none."""
    if not class_stats_needed(cfg):
        return ""
    return data.resolve_class_stats(cfg)


def with_class_stats(cfg):
    """``cfg`` itself when its class statistics are resolved or not needed, else a frozen copy
    with them resolved (for configs built by one's own code)."""
    if cfg.MODEL.LONG_TAIL.CLASS_STATS or not class_stats_needed(cfg):
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    resolve_class_stats(cfg)
    cfg.freeze()
    return cfg


def setup_logging(cfg):
    """LongTailSeg's logger (head / body / tail tables, class statistics) beside Detectron2's,
    into OUTPUT_DIR/log.txt; once per process."""
    if not logging.getLogger("longtailseg").handlers:
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="longtailseg")


def setup(args, add_config=()):
    """The run's config from ``default_argument_parser``'s ``args``: checked (model values first,
    before any data is read; the run folder, see ``run_folder``; stage-1 weights of a second
    stage; the weights to evaluate; the output folder), logged, and with its class statistics
    resolved once (counted or reused) before it is frozen; OUTPUT_DIR/config.yaml holds the
    resolved path. ``add_config``: as for ``load_config``."""
    cfg = load_config(args.config_file, args.opts, freeze=False, add_config=add_config)
    check_run_config(cfg, comm.get_world_size(), eval_only=args.eval_only)  # schedule, batch split, loader
    check_detectron2_main_keys(cfg)  # main's keys that this Detectron2 would ignore
    check_model_config(cfg)  # before any data is read
    loads_own_weights = model_loads_own_weights(cfg)
    if loads_own_weights and not args.eval_only:
        raise ConfigError(f"{cfg.MODEL.META_ARCHITECTURE} loads its trained weights itself and only "
                          "evaluates: pass --eval-only (train its parts with their own configs)")
    run = run_folder.prepare(cfg, args)  # lock, refusals, the checkpoint to resume: before any write
    comm.synchronize()  # every process resumes from the last_checkpoint it settled
    if stage2.is_stage2(cfg) and not args.eval_only:
        stage2.check_stage1_weights(cfg, resuming=args.resume)
    ensure_weights_available(cfg, resuming=args.resume)  # offline: names the file to fetch
    if args.eval_only and not loads_own_weights:
        check_weights_file(cfg, resuming=args.resume)
    else:
        check_local_weights(cfg, resuming=args.resume)
    check_output_dir(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    setup_logging(cfg)
    if resolve_class_stats(cfg) and comm.is_main_process():
        write_text_atomically(cfg.dump(), os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
    run.finish()
    if comm.is_main_process():
        check_data(cfg, eval_only=args.eval_only)
    comm.synchronize()
    cfg.freeze()
    return cfg


def build_model_and_count(cfg):
    """(model, parameter count before stage-2 freezing) of ``cfg`` with resolved class
    statistics: Detectron2's builder, then a second stage frozen (``engine/stage2.py``)."""
    check_model_config(cfg)
    model = build_detectron2_model(cfg)
    # Counted before stage 2 turns BatchNorm weights into FrozenBatchNorm2d buffers, so a
    # stage-2 model counts as its stage-1 model plus the stage-2 parameters.
    total = sum(p.numel() for p in model.parameters())
    if stage2.is_stage2(cfg):
        model = stage2.prepare_stage2_model(model)
    return model, total


# What MODEL.WEIGHTS holds, for build_model: the model itself (every tensor must fit), the stage 1
# a second stage starts from (the modules it trains may be missing), or an initialisation such as
# ImageNet weights of the backbone (Detectron2 loads what matches and logs the rest).
WEIGHTS_KINDS = ("trained", "stage1", "pretrained")


def build_model(cfg, load_weights=True, weights="trained"):
    """The model ``cfg`` describes, as every LongTailSeg entry point builds it: class statistics
    resolved (a copy of ``cfg`` is filled in when they are missing), a second stage frozen, and
    with ``load_weights`` MODEL.WEIGHTS loaded and checked to fit as ``weights`` (one of
    ``WEIGHTS_KINDS``) says."""
    if weights not in WEIGHTS_KINDS:
        raise ValueError(f"weights={weights!r}; use one of {WEIGHTS_KINDS}")
    cfg = with_class_stats(cfg)
    model, total = build_model_and_count(cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logging.getLogger("longtailseg").info(f"model parameters: {total:,} ({trainable:,} trainable)")
    if load_weights and cfg.MODEL.WEIGHTS:
        if weights == "pretrained":
            LongTailCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        else:
            new_modules = stage2.stage2_trainable_prefixes(model) if weights == "stage1" else ()
            load_checked(model, cfg.MODEL.WEIGHTS, new_modules)
    return model


def load_checked(model, weights, may_be_missing=()):
    """Load ``weights`` into ``model`` and refuse weights that do not fit it (but for the modules
    named by the prefixes ``may_be_missing``)."""
    checkpointer = LongTailCheckpointer(model)
    checkpointer.load(weights)
    check_complete_load(checkpointer, weights, may_be_missing)
    return checkpointer
