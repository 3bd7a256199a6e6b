"""Evaluators that report results per head / body / tail class group."""
from .sem_seg_evaluation import (  # noqa: F401
    LongTailSemSegEvaluator,
    format_group_table,
    sem_seg_metrics,
)

__all__ = ["LongTailSemSegEvaluator", "format_group_table", "sem_seg_metrics"]
