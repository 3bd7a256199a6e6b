"""Datasets: the synthetic long-tailed sets (registered on import), label checks, class counts."""
from .datasets import (  # noqa: F401
    SYNTHETIC_DATASETS,
    get_dataset_dicts_checked,
    missing_files_reported,
    prepare_dataset,
    register_synthetic_datasets,
)
from .labels import check_label_values  # noqa: F401

register_synthetic_datasets()
