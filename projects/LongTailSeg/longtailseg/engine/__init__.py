"""Training: the ``Trainer``, config loading and run set-up, the stage-aware ``build_model`` every
entry point uses, stage-2 freezing, checkpoints, hooks, and a launcher that also runs CPU
processes."""
from .defaults import (  # noqa: F401
    build_model,
    class_stats_needed,
    load_config,
    resolve_class_stats,
    setup,
    with_class_stats,
)
from .launch import launch  # noqa: F401
from .trainer import Trainer  # noqa: F401
