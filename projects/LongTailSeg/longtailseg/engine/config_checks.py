"""Checks of a run's command line and schedule values, made right after the config is read.

Each is a value Detectron2 takes without a word and fails on later: a division by zero at the
first checkpoint, an assertion when the batch is split over the processes, a DataLoader error,
or (for a repeated ``--config-file``) a run of a config other than the one the user named.
"""
import sys

from ..errors import ConfigError
from .mixed_precision import amp_precision
from .optimizer import check_optimizer_config


def check_run_config(cfg, world_size, eval_only=False):
    """Refuse schedule and loader values that no run can use, naming the key and the fix: an
    evaluation reads only the loader's; training also the schedule and the batch split over
    ``world_size`` processes."""
    workers = cfg.DATALOADER.NUM_WORKERS
    if workers < 0:
        raise ConfigError(f"DATALOADER.NUM_WORKERS is {workers}; set it to 0 (load in the training "
                          "process) or more (loader processes per training process)")
    if eval_only:
        return
    solver = cfg.SOLVER
    check_optimizer_config(cfg)
    if solver.MAX_ITER < 1:
        raise ConfigError(f"SOLVER.MAX_ITER is {solver.MAX_ITER}; set it to the number of iterations to "
                          "train (>= 1), or pass --eval-only to evaluate MODEL.WEIGHTS without training")
    if solver.CHECKPOINT_PERIOD < 1:
        raise ConfigError(f"SOLVER.CHECKPOINT_PERIOD is {solver.CHECKPOINT_PERIOD}; set it to the "
                          "iterations between checkpoints (>= 1; above SOLVER.MAX_ITER only the final "
                          "model is saved)")
    if solver.AMP.ENABLED:
        amp_precision(cfg)  # SOLVER.AMP.PRECISION: a dtype this device can train in
    batch = solver.IMS_PER_BATCH
    if batch < 1 or batch % world_size:
        suggestion = max(world_size, batch - batch % world_size)
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH is {batch}, which does not split evenly over the {world_size} "
            f"training process(es) (--num-gpus x --num-machines); set it to a multiple of "
            f"{world_size}, e.g. SOLVER.IMS_PER_BATCH {suggestion}, or change --num-gpus")


def check_repeated_options(parser, argv):
    """Refuse an option given twice (``--config-file a.yaml --config-file b.yaml``): argparse
    keeps the last and silently drops the first. Abbreviations (``--config``) count as the option
    they abbreviate; the words from the first ``KEY VALUE`` override on are not options."""
    given, words, i = {}, list(sys.argv[1:] if argv is None else argv), 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            break  # the overrides (nargs=REMAINDER) begin
        name, _, value = word.partition("=")
        matches = [s for s in parser._option_string_actions if s.startswith(name) and s.startswith("--")]
        action = parser._option_string_actions.get(name if name in matches else
                                                   (matches[0] if len(matches) == 1 else None))
        takes_value = action is not None and action.nargs is None
        if takes_value and "=" not in word:
            value = words[i + 1] if i + 1 < len(words) else ""
            i += 1
        if takes_value:
            given.setdefault(action.option_strings[-1], []).append(value)
        i += 1
    for option, values in given.items():
        if len(values) > 1:
            raise ConfigError(f"{option} is given {len(values)} times ({', '.join(values)}); give it once "
                              f"(only the last, {values[-1]}, would be used and the others silently ignored)")
