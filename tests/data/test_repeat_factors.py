"""Repeat-factor sampling for semantic segmentation (MEDOE's Table 2 re-sampling baseline): image
factors from the classes each label holds, as LVIS's rule computes them (issue 22)."""
import math

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_cfg

from detectron2.data import DatasetCatalog

from longtailseg.data.build import build_train_loader, sem_seg_repeat_factors
from longtailseg.data.class_counting import classes_per_image
from longtailseg.errors import ConfigError
from longtailseg.longtail import class_stats as cs

CONFIG = "synthetic/rfs_deeplab.yaml"


def test_repeat_factors_by_hand():
    # f: class 0 in 3 of 5 images, 1 in 2, 2 in 2, 3 in 1; the last image holds ignored pixels only.
    images = [[0, 1], [0], [0, 2], [1, 2, 3], []]
    factors = sem_seg_repeat_factors(images, 0.5)
    r = {0: 1.0, 1: math.sqrt(0.5 / 0.4), 2: math.sqrt(0.5 / 0.4), 3: math.sqrt(0.5 / 0.2)}  # r_0: sqrt(.5/.6) < 1
    expected = [r[1], r[0], r[2], r[3], 1.0]
    assert factors.tolist() == pytest.approx(expected, rel=1e-6)
    assert factors.tolist() == pytest.approx([1.11803, 1.0, 1.11803, 1.58114, 1.0], rel=1e-5)
    with pytest.raises(ConfigError, match="DATALOADER.REPEAT_THRESHOLD"):
        sem_seg_repeat_factors(images, 0.0)


def test_loader_repeats_images_by_the_classes_of_their_labels(datasets_root, tmp_path):
    cfg = tiny_cfg(CONFIG, tmp_path)
    threshold = cfg.DATALOADER.REPEAT_THRESHOLD
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    # By hand, from the label files themselves.
    present = [set(np.unique(np.asarray(Image.open(d["sem_seg_file_name"])))) - {255} for d in dicts]
    fraction = {c: sum(c in p for p in present) / len(present) for c in set().union(*present)}
    expected = [max([max(1.0, math.sqrt(threshold / fraction[c])) for c in p], default=1.0) for p in present]
    assert any(e > 1 for e in expected) and any(e == 1 for e in expected)

    # The count kept each image's classes, so the loader reads no label for them.
    stats = cs.load(cfg.MODEL.LONG_TAIL.CLASS_STATS)
    assert len(stats.extra["image_classes"]["classes"]) == len(dicts)
    kept = classes_per_image(dicts, 19, 255, stats)
    assert [set(k) for k in kept] == present
    assert classes_per_image(dicts, 19, 255, None, num_workers=1) == kept  # read from the labels
    loader = build_train_loader(cfg)
    assert loader.positioned_dataset.repeat_factors.tolist() == pytest.approx(expected, rel=1e-6)
    batch = next(iter(loader))
    assert len(batch) == cfg.SOLVER.IMS_PER_BATCH and batch[0]["sem_seg"].shape == (32, 32)
