"""Datasets: the synthetic long-tailed sets (registered on import), loaders with label checks,
and the class statistics of a training split."""
from .datasets import (  # noqa: F401
    SYNTHETIC_DATASETS,
    get_dataset_dicts_checked,
    missing_files_reported,
    prepare_dataset,
    register_synthetic_datasets,
)
from .synthetic.layout import PROFILE_FOLDERS
from .labels import check_label_values  # noqa: F401
from .class_counting import resolve_class_stats  # noqa: F401

for _profile in PROFILE_FOLDERS:
    register_synthetic_datasets(profile=_profile)
