"""examples/train_own_dataset.py, the documented way to use the package from one's own code, run
as a user runs it on a dataset of their own: it trains, counts the class statistics and prints the
head / body / tail table with no logger set-up of its own."""
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import REPO

CLASSES = ["sky", "road", "car", "sign"]  # pixel shares below: head, head, body, tail


def write_dataset(root, n_train=6, n_val=2, size=32):
    rng = np.random.default_rng(0)
    root.mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            label = np.zeros((size, size), np.uint8)
            label[size // 2:] = 1
            label[2:10, 2:12] = 2
            label[20:22, 20:22] = 3
            label[0, :4] = 255
            image = (np.asarray([[40, 120, 220], [90, 90, 90], [200, 30, 30], [240, 240, 0], [0, 0, 0]],
                                np.uint8)[np.minimum(label, 4)] + rng.integers(0, 20, (size, size, 3))).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.jpg")
            Image.fromarray(label).save(root / "labels" / split / f"{i:03d}.png")


def test_trains_and_prints_the_group_table(tmp_path):
    data = tmp_path / "my_dataset"
    write_dataset(data)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "train_own_dataset.py"), "--root", str(data),
         "--loss", "PAT", "--output", str(out),
         "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
         "DATALOADER.CLASS_STATS_WORKERS", "1", "INPUT.MIN_SIZE_TRAIN", "(32,)", "INPUT.MAX_SIZE_TRAIN", "32",
         "INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "32"],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    # The group table (LongTailSeg's logger) and the per-class rows of this dataset's classes.
    assert "Semantic segmentation on my_dataset_val by class group" in log, log[-3000:]
    for row in ["head", "body", "tail", *CLASSES]:
        assert re.search(rf"\|\s+{row}\s+\|", log), row
    assert (out / "class_stats.json").is_file() and (out / "model_final.pth").is_file()
    # The Trainer set LongTailSeg's logger up: the table is in OUTPUT_DIR/log.txt too.
    assert "by class group" in (out / "log.txt").read_text()
