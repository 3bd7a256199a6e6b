"""Evaluators that report results per head / body / tail class group, and the builder that picks
the evaluators of a dataset."""
from .sem_seg_evaluation import (  # noqa: F401
    MIOU_RULES,
    LongTailSemSegEvaluator,
    format_class_table,
    format_group_table,
    per_class_metrics,
    sem_seg_metrics,
)
from .build import (  # noqa: F401
    LONG_TAIL_RESULTS_KEY,
    SavedCityscapesSemSegEvaluator,
    SavedLVISEvaluator,
    build_evaluator,
)
