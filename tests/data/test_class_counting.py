"""Class counting over the registered synthetic training splits."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_tool
from longtailseg.data import get_dataset_dicts_checked, register_synthetic_datasets
from longtailseg.data.class_counting import compute_class_stats
from longtailseg.errors import ClassStatsError, DatasetError


def test_sem_seg_counts_equal_a_direct_count_of_the_label_files(datasets_root):
    stats = compute_class_stats("synthetic_ade_sem_seg_train", num_workers=2, progress=False)
    expected = np.zeros(stats.num_classes, dtype=np.int64)
    for d in get_dataset_dicts_checked("synthetic_ade_sem_seg_train"):
        label = np.asarray(Image.open(d["sem_seg_file_name"]))
        expected += np.bincount(label[label != 255], minlength=stats.num_classes)
    assert stats.counts == expected.tolist()
    freqs = expected / expected.sum()
    assert stats.groups["head"] == [c for c in range(len(freqs)) if freqs[c] > 0.01]
    assert stats.groups["tail"] == [c for c in range(len(freqs)) if freqs[c] < 0.001]


def test_cityscapes_layout_gives_the_same_counts(datasets_root):
    ade = compute_class_stats("synthetic_ade_sem_seg_train", num_workers=1, progress=False)
    cityscapes = compute_class_stats("synthetic_cityscapes_sem_seg_train", num_workers=1, progress=False)
    assert cityscapes.counts == ade.counts


def test_lvis_counts_and_frequency_groups(datasets_root):
    stats = compute_class_stats("synthetic_lvis_train", progress=False)
    with open(datasets_root / "synthetic" / "lvis" / "lvis_v1_train.json") as f:
        data = json.load(f)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    assert stats.counts == [c["instance_count"] for c in categories]
    assert stats.image_counts == [c["image_count"] for c in categories]
    rare = [i for i, c in enumerate(categories) if c["frequency"] == "r"]
    assert stats.groups["tail"] == rare and rare


def test_validation_split_is_refused():
    with pytest.raises(ClassStatsError, match="training split only"):
        compute_class_stats("synthetic_ade_sem_seg_val", progress=False)


def test_cli_writes_the_file_and_prints_the_groups(datasets_root, tmp_path):
    output = tmp_path / "stats.json"
    proc = run_tool("compute_class_stats.py", "--dataset", "synthetic_ade_sem_seg_train",
                    "--workers", 2, "--output", output, datasets_root=datasets_root)
    assert "| head" in proc.stdout and "tail" in proc.stdout and str(output) in proc.stdout
    assert json.loads(output.read_text())["num_classes"] == 19


def test_missing_dataset_folder_names_the_path_and_the_fix(tmp_path, datasets_root):
    register_synthetic_datasets(str(tmp_path / "absent"))
    try:
        with pytest.raises(DatasetError) as e:
            compute_class_stats("synthetic_ade_sem_seg_train", progress=False)
        assert str(tmp_path / "absent") in str(e.value) and "make_synthetic_data.py" in str(e.value)
    finally:
        register_synthetic_datasets(str(datasets_root / "synthetic"))
