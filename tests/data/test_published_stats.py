"""Class statistics shipped for the real training splits: what they hold, that a model on a real
dataset is built from them without the split on disk, and that counted statistics win (with a
warning when they disagree with the published ones)."""
import json
import logging
import os

import numpy as np
import pytest
import torch

from conftest import REPO, run_tool, tiny_cfg
from longtailseg import model_zoo
from longtailseg.data import published_stats
from longtailseg.engine import build_model
from longtailseg.longtail import class_stats as cs

from detectron2.data import MetadataCatalog


def _names(dataset):
    metadata = MetadataCatalog.get(dataset)
    return list(getattr(metadata, "stuff_classes", None) or metadata.thing_classes)


# dataset -> (head, body, tail) sizes: DisAlign's ADE20K split, LVIS's f / c / r counts, and the
# Cityscapes split the default thresholds give (issue 22's 9 / 9 / 1).
EXPECTED_GROUPS = {
    "ade20k_sem_seg_train": (20, 55, 75),
    "cityscapes_fine_sem_seg_train": (9, 9, 1),
    "lvis_v0.5_train": (315, 461, 454),
    "lvis_v1_train": (405, 461, 337),
}


@pytest.mark.parametrize("dataset", sorted(published_stats.PUBLISHED_CLASS_STATS))
def test_shipped_statistics_are_those_of_the_registered_split(dataset):
    stats = published_stats.load_published(dataset)
    cs.check_matches(stats, _names(dataset), dataset)
    assert stats.dataset == dataset and stats.source.startswith("published: ")
    assert tuple(len(stats.groups[g]) for g in cs.GROUP_NAMES) == EXPECTED_GROUPS[dataset]


def test_shipped_numbers_agree_with_their_published_totals():
    ade = published_stats.load_published("ade20k_sem_seg_train")
    assert sum(ade.counts) == pytest.approx(0.9275)  # objectInfo150's Ratio column sums to this
    assert ade.counts[0] == 0.1576 and ade.image_counts[0] == 11664  # wall
    city = published_stats.load_published("cityscapes_fine_sem_seg_train")
    assert city.extra["all_pixels"] == 2975 * 1024 * 2048
    assert [city.class_names[c] for c in city.groups["tail"]] == ["motorcycle"]
    v1 = published_stats.load_published("lvis_v1_train")
    assert sum(v1.counts) == 1270141 and max(v1.image_counts) == 1977
    # LVIS's own frequency rule: rare categories are in 1-10 training images
    assert max(v1.image_counts[c] for c in v1.groups["tail"]) <= 10
    v05 = published_stats.load_published("lvis_v0.5_train")
    assert max(v05.image_counts[c] for c in v05.groups["tail"]) <= 10


def test_the_tool_writes_the_shipped_ade20k_and_cityscapes_files(ade20k_object_info, tmp_path):
    run_tool("make_published_class_stats.py", "--ade20k-object-info", ade20k_object_info,
             "--output-dir", tmp_path)
    for dataset in ("ade20k_sem_seg_train", "cityscapes_fine_sem_seg_train"):
        name = published_stats.PUBLISHED_CLASS_STATS[dataset]
        with open(tmp_path / name) as made, open(os.path.join(published_stats.FILES_DIR, name)) as shipped:
            assert json.load(made) == json.load(shipped)


def test_regrouping_for_other_thresholds():
    city = published_stats.load_published("cityscapes_fine_sem_seg_train")
    same = published_stats.regrouped(city, cs.DEFAULT_HEAD_RATIO, cs.DEFAULT_TAIL_RATIO)
    assert same.groups == city.groups
    wider = published_stats.regrouped(city, 0.05, 0.005)  # shares of all 6.24e9 pixels
    shares = np.asarray(city.counts) / city.extra["all_pixels"]
    assert wider.groups["head"] == [c for c in range(19) if shares[c] > 0.05]
    assert wider.groups["tail"] == [c for c in range(19) if shares[c] <= 0.005]
    lvis = published_stats.load_published("lvis_v1_train")
    assert published_stats.regrouped(lvis, 0.5, 0.1).groups == lvis.groups  # LVIS keeps r / c / f


@pytest.mark.parametrize("config", ["ade20k/blv_deeplab.yaml", "lvis/mask_rcnn_R_50_FPN_blv.yaml",
                                    "cityscapes/medoe_deeplab.yaml"])
def test_a_real_dataset_model_builds_without_its_training_split(config, tmp_path, caplog):
    from longtailseg.data.class_counting import current_fingerprint
    from longtailseg.errors import DatasetError

    dataset = model_zoo.get_config(config).DATASETS.TRAIN[0]
    try:  # the test machine's DETECTRON2_DATASETS holds the synthetic sets only
        current_fingerprint(dataset)
        pytest.skip(f"{dataset} is on disk here: its statistics are counted, not read from the package")
    except DatasetError:
        pass
    cfg = model_zoo.get_config(config)
    cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE, cfg.OUTPUT_DIR = "", "cpu", str(tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="longtailseg"):
        model = build_model(cfg, load_weights=False)
    assert f"the statistics shipped for {dataset}" in caplog.text
    used = cs.load(str(tmp_path / "out" / "class_stats.json"))
    assert used.counts == published_stats.load_published(dataset).counts
    # regrouped at the dataset's thresholds (Cityscapes: 2 % / 0.3 %, where MEDOE's experts each own
    # at least two classes; the published file holds the default 1 % / 0.1 % groups)
    assert used.groups == published_stats.regrouped(
        published_stats.load_published(dataset), cfg.MODEL.LONG_TAIL.HEAD_RATIO, cfg.MODEL.LONG_TAIL.TAIL_RATIO).groups
    if "blv" in config:  # BLV reads them: its per-class noise scale is that of the published counts
        from longtailseg.longtail.variation import LogitVariation, rarity_scale

        variations = [m for m in model.modules() if isinstance(m, LogitVariation)]
        assert variations and torch.allclose(variations[0].scale, rarity_scale(used.counts).to(variations[0].scale))
    else:
        assert min(len(ids) for ids in used.groups.values()) >= 2


def test_counted_statistics_win_and_disagreeing_published_ones_are_reported(
        datasets_root, tmp_path, monkeypatch, caplog):
    dataset = "synthetic_ade_sem_seg_train"
    counted_dir = tmp_path / "counted"
    cfg = tiny_cfg("synthetic/blv_deeplab.yaml", counted_dir)
    counted = cs.load(cfg.MODEL.LONG_TAIL.CLASS_STATS)
    # Published numbers that differ: the two most frequent classes swapped.
    published = cs.ClassStats(**{**counted.__dict__, "counts": [counted.counts[1], counted.counts[0]]
                                 + counted.counts[2:], "source": "published: a test's numbers"})
    cs.save(published, str(tmp_path / "published.json"))
    monkeypatch.setattr(published_stats, "FILES_DIR", str(tmp_path))
    monkeypatch.setitem(published_stats.PUBLISHED_CLASS_STATS, dataset, "published.json")
    with caplog.at_level(logging.WARNING, logger="longtailseg"):
        cfg = tiny_cfg("synthetic/blv_deeplab.yaml", tmp_path / "again")
    assert cs.load(cfg.MODEL.LONG_TAIL.CLASS_STATS).counts == counted.counts  # counted ones used
    assert "differ from the published ones (published: a test's numbers)" in caplog.text
    assert repr(counted.class_names[0]) in caplog.text
    caplog.clear()
    cs.save(counted, str(tmp_path / "published.json"))  # agreeing: nothing to report
    with caplog.at_level(logging.WARNING, logger="longtailseg"):
        tiny_cfg("synthetic/blv_deeplab.yaml", tmp_path / "third")
    assert "differ from the published" not in caplog.text
