"""Evaluators that report results per head / body / tail class group, and the builder that picks
the evaluators of a dataset."""
from .sem_seg_evaluation import (  # noqa: F401
    LongTailSemSegEvaluator,
    format_class_table,
    format_group_table,
    sem_seg_metrics,
)
from .build import SavedLVISEvaluator, build_evaluator  # noqa: F401
