"""Shared fixtures: one tiny synthetic long-tailed dataset per test session."""
import os
import subprocess
import sys

import pytest

import longtailseg  # noqa: F401  (registers the LongTailSeg components)
from longtailseg.data import register_synthetic_datasets
from longtailseg.data.synthetic.generator import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DATA = dict(seed=0, num_classes=19, num_train=24, num_val=8, size=32)
# Overrides that shrink the synthetic DeepLabV3+ config to seconds per run.
TINY_TRAINING = [
    "INPUT.MIN_SIZE_TRAIN", "(32,)", "INPUT.MAX_SIZE_TRAIN", "32",
    "INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "32",
    "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.CLASS_STATS_WORKERS", "1",
]


def tiny_cfg(config, output_dir, *opts):
    """A synthetic config (path under configs/) shrunk by TINY_TRAINING, plus KEY VALUE overrides,
    with its class statistics resolved as tools/train_net.py resolves them."""
    from longtailseg.engine import load_config, resolve_class_stats

    cfg = load_config(os.path.join(REPO, "configs", config),
                      TINY_TRAINING + ["OUTPUT_DIR", str(output_dir)] + [str(o) for o in opts],
                      freeze=False)
    resolve_class_stats(cfg)
    return cfg


def random_batch(n=2, size=32, seed=0, num_classes=19):
    """Training inputs for SemanticSegmentor: random images and labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 255, (3, size, size), generator=g).float(),
             "sem_seg": torch.randint(0, num_classes, (size, size), generator=g),
             "height": size, "width": size} for _ in range(n)]


def instance_batch(n=2, size=32, seed=0, num_classes=19):
    """Mask R-CNN training inputs: random images with three rectangles each (boxes and box-shaped
    masks), classes drawn from all ``num_classes`` categories."""
    import torch
    from detectron2.structures import BitMasks, Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        corners = torch.randint(0, size - 12, (3, 2), generator=g)
        boxes = torch.cat([corners, corners + torch.randint(6, 12, (3, 2), generator=g)], 1)
        masks = torch.zeros(3, size, size, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            masks[i, y0:y1, x0:x1] = True
        instances = Instances((size, size), gt_boxes=Boxes(boxes.float()), gt_masks=BitMasks(masks),
                              gt_classes=torch.randint(0, num_classes, (3,), generator=g))
        batch.append({"image": torch.randint(0, 255, (3, size, size), generator=g).float(),
                      "instances": instances, "height": size, "width": size})
    return batch


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    """A DETECTRON2_DATASETS folder holding ``synthetic/`` (registered in this process too)."""
    root = tmp_path_factory.mktemp("datasets")
    generate(str(root / "synthetic"), progress=False, **TINY_DATA)
    register_synthetic_datasets(str(root / "synthetic"))
    return root


@pytest.fixture(scope="session")
def ade20k_object_info():
    """Path of ADE20K's published objectInfo150.txt (tests/fixtures/README.md)."""
    return os.path.join(REPO, "tests", "fixtures", "ade20k_objectInfo150.txt")


def run_tool(script, *args, datasets_root=None, check=True, timeout=300):
    """Run a tools/ script as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    if datasets_root is not None:
        env["DETECTRON2_DATASETS"] = str(datasets_root)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", script), *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def trained_baseline(datasets_root, tmp_path_factory):
    """Four iterations of the synthetic CE baseline, then its final evaluation (an OUTPUT_DIR)."""
    out = tmp_path_factory.mktemp("baseline")
    run_tool("train_net.py", "--config-file", "configs/synthetic/deeplab_v3_plus.yaml", *TINY_TRAINING,
             "SOLVER.MAX_ITER", 4, "OUTPUT_DIR", out, datasets_root=datasets_root)
    return out
