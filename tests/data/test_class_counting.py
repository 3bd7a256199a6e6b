"""Class counting over the registered synthetic training splits."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_tool, tiny_cfg
from longtailseg.data import class_counting, get_dataset_dicts_checked, register_synthetic_datasets
from longtailseg.data.class_counting import compute_class_stats
from longtailseg.errors import ClassStatsError, DatasetError
from longtailseg.longtail import class_stats as cs


def test_sem_seg_counts_equal_a_direct_count_of_the_label_files(datasets_root):
    stats = compute_class_stats("synthetic_ade_sem_seg_train", num_workers=2, progress=False)
    expected = np.zeros(stats.num_classes, dtype=np.int64)
    all_pixels = 0
    for d in get_dataset_dicts_checked("synthetic_ade_sem_seg_train"):
        label = np.asarray(Image.open(d["sem_seg_file_name"]))
        expected += np.bincount(label[label != 255], minlength=stats.num_classes)
        all_pixels += label.size
    assert stats.counts == expected.tolist()
    assert (expected.sum() < all_pixels) and stats.extra["all_pixels"] == all_pixels  # some ignored
    # Groups by share of all pixels, ignored ones included (as ADE20K's Ratio column).
    shares = expected / all_pixels
    assert stats.groups["head"] == [c for c in range(len(shares)) if shares[c] > 0.01]
    assert stats.groups["tail"] == [c for c in range(len(shares)) if shares[c] <= 0.001]
    assert sorted(sum(stats.groups.values(), [])) == list(range(stats.num_classes))


def test_ade20k_object_info_gives_disalign_groups(ade20k_object_info):
    """Detectron2's own ade20k_sem_seg_train (its class names; no images needed) with the
    published objectInfo150.txt: DisAlign's [:20], [20:75], [75:]."""
    stats = compute_class_stats("ade20k_sem_seg_train", object_info=ade20k_object_info)
    assert stats.groups == {"head": list(range(20)), "body": list(range(20, 75)),
                            "tail": list(range(75, 150))}
    assert stats.class_names[19] == "chair" and stats.class_names[20] == "car"
    assert stats.class_names[75] == "swivel chair" and 75 in stats.groups["tail"]
    assert "as published" in stats.group_rule and "tail <= 0.001" in stats.group_rule


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


def _counting_spy(monkeypatch):
    """Record the datasets ``resolve_class_stats`` counts (the count itself still runs)."""
    counted = []
    real = class_counting.compute_class_stats

    def compute_and_record(dataset_name, *args, **kwargs):
        counted.append(dataset_name)
        return real(dataset_name, *args, **kwargs)

    monkeypatch.setattr(class_counting, "compute_class_stats", compute_and_record)
    return counted


def test_a_second_stage_reuses_the_statistics_beside_its_weights(datasets_root, tmp_path, monkeypatch):
    stage1 = tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path / "stage1")
    weights = tmp_path / "stage1" / "model_final.pth"
    weights.write_bytes(b"")  # only its folder is read here
    counted = _counting_spy(monkeypatch)
    stage2 = tiny_cfg("synthetic/disalign_deeplab.yaml", tmp_path / "stage2", "MODEL.WEIGHTS", weights)
    assert counted == []
    assert stage2.MODEL.LONG_TAIL.CLASS_STATS == str(tmp_path / "stage2" / "class_stats.json")
    assert (cs.load(stage2.MODEL.LONG_TAIL.CLASS_STATS).counts
            == cs.load(stage1.MODEL.LONG_TAIL.CLASS_STATS).counts)


def test_the_output_cache_is_counted_again_only_when_the_training_data_changed(
        datasets_root, tmp_path, monkeypatch):
    data = tmp_path / "synthetic"
    shutil.copytree(datasets_root / "synthetic", data)
    register_synthetic_datasets(str(data))
    try:
        counted = _counting_spy(monkeypatch)
        first = cs.load(tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path / "out").MODEL.LONG_TAIL.CLASS_STATS)
        tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path / "out")
        assert counted == ["synthetic_ade_sem_seg_train"]  # the second run read the cache

        # Data regenerated with one training image fewer: the cache no longer describes it.
        label = sorted((data / "ADEChallengeData2016" / "annotations_detectron2" / "training").glob("*.png"))[0]
        (data / "ADEChallengeData2016" / "images" / "training" / f"{label.stem}.jpg").unlink()
        label.unlink()
        again = cs.load(tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path / "out").MODEL.LONG_TAIL.CLASS_STATS)
        assert counted == ["synthetic_ade_sem_seg_train"] * 2
        assert again.num_images == first.num_images - 1
    finally:
        register_synthetic_datasets(str(datasets_root / "synthetic"))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])  # 8- and 16-bit PNG labels
def test_one_label_file_is_counted_and_checked_from_one_histogram(dtype, tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, (40, 30)).astype(dtype)
    label[:3] = 255
    path = tmp_path / "label.png"
    Image.fromarray(label).save(path)
    assert np.asarray(Image.open(path)).dtype == dtype
    hist, pixels = class_counting._count_label_file((str(path), 5, 255))
    assert pixels == label.size and hist.tolist() == [int((label == c).sum()) for c in range(5)]
    label[5, 7] = 9  # out of range: refused, naming the file
    Image.fromarray(label).save(path)
    with pytest.raises(DatasetError, match=rf"label file {path} has values \[9\] >= num_classes 5"):
        class_counting._count_label_file((str(path), 5, 255))
