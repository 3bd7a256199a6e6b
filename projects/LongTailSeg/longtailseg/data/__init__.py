"""Datasets: the synthetic long-tailed sets (registered on import, reading no file), the checks a
registered dataset must pass, loaders with label checks, and the class statistics of a training
split."""
from .datasets import (  # noqa: F401
    SYNTHETIC_DATASETS,
    check_dataset,
    get_dataset_dicts_checked,
    missing_files_reported,
    prepare_dataset,
    register_synthetic_datasets,
)
from .labels import check_label_values  # noqa: F401
from .class_counting import resolve_class_stats  # noqa: F401
