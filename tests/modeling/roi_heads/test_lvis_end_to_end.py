"""Mask R-CNN with the long-tail ROI heads end to end through tools/train_net.py on a small
synthetic LVIS set: stage 1, LVISEvaluator's AP per frequency group, DisAlign stage 2."""
import json

import pytest
import torch

from conftest import TINY_TRAINING, run_tool
from longtailseg.data.synthetic.generator import generate

BASELINE = "configs/synthetic/mask_rcnn_baseline.yaml"
DISALIGN = "configs/synthetic/mask_rcnn_disalign.yaml"
METRICS = ["AP", "AP50", "APr", "APc", "APf"]


@pytest.fixture(scope="module")
def lvis_root(tmp_path_factory):
    """A DETECTRON2_DATASETS folder whose synthetic LVIS set has f, c and r categories in both
    splits (the session's tiny set has too few training images for an f one)."""
    root = tmp_path_factory.mktemp("lvis_datasets")
    generate(str(root / "synthetic"), progress=False, seed=0, num_classes=19, num_train=160,
             num_val=12, size=32)
    return root


def _lvis_results(output_dir):
    return json.loads((output_dir / "inference" / "synthetic_lvis_val" / "lvis_results.json").read_text())


@pytest.fixture(scope="module")
def baseline_run(lvis_root, tmp_path_factory):
    """Three iterations of the synthetic baseline, then its LVIS evaluation. The learning rate is
    tiny: a from-scratch Mask R-CNN's first steps make it predict only background (its box
    features are large), and the evaluation needs detections to score."""
    out = tmp_path_factory.mktemp("mask_rcnn_baseline")
    run_tool("train_net.py", "--config-file", BASELINE, *TINY_TRAINING, "SOLVER.MAX_ITER", 3,
             "SOLVER.BASE_LR", 1e-5, "OUTPUT_DIR", out, datasets_root=lvis_root)
    return out


def test_baseline_trains_and_lvis_evaluator_reports_ap_per_frequency_group(baseline_run, lvis_root):
    categories = json.loads((lvis_root / "synthetic/lvis/lvis_v1_val.json").read_text())["categories"]
    assert {c["frequency"] for c in categories} == {"r", "c", "f"}
    assert (baseline_run / "model_final.pth").is_file()
    results = _lvis_results(baseline_run)
    assert set(results) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        for metric in METRICS:
            value = results[task][metric]
            assert 0.0 <= value <= 100.0, (task, metric, value)  # -100 or nan: group not evaluated
    metrics = [json.loads(line) for line in (baseline_run / "metrics.json").read_text().splitlines()]
    assert any("segm/APr" in m and "bbox/APf" in m for m in metrics)


def test_disalign_stage2_trains_only_the_calibration_and_evaluates(baseline_run, lvis_root, tmp_path):
    proc = run_tool("train_net.py", "--config-file", DISALIGN, *TINY_TRAINING, "SOLVER.MAX_ITER", 3,
                    "MODEL.WEIGHTS", baseline_run / "model_final.pth", "OUTPUT_DIR", tmp_path,
                    datasets_root=lvis_root)
    log = proc.stdout + proc.stderr
    assert "roi_heads.box_predictor.long_tail.calibration.{alpha, beta}" in log  # the only new keys
    assert "not used by the model" not in log
    stage1 = torch.load(baseline_run / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    stage2 = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    frozen = [k for k in stage1 if not k.endswith("num_batches_tracked")]
    assert any("running_var" in k for k in frozen) and any("mask_head" in k for k in frozen)
    for key in frozen:
        assert torch.equal(stage1[key], stage2[key]), f"stage 2 changed frozen {key}"
    assert not torch.equal(stage2["roi_heads.box_predictor.long_tail.calibration.beta"], torch.zeros(19))
    assert (tmp_path / "class_stats.json").is_file()  # GRW's instance counts
    assert 0.0 <= _lvis_results(tmp_path)["segm"]["APr"] <= 100.0


def test_stage2_without_stage1_weights_says_how_to_make_them(lvis_root, tmp_path):
    proc = run_tool("train_net.py", "--config-file", "configs/synthetic/mask_rcnn_cosine_disalign.yaml",
                    "MODEL.WEIGHTS", tmp_path / "none.pth", "OUTPUT_DIR", tmp_path,
                    datasets_root=lvis_root, check=False)
    assert proc.returncode == 2
    line = [l for l in proc.stderr.splitlines() if l.startswith("error:")][0]
    assert str(tmp_path / "none.pth") in line
    assert "--config-file configs/synthetic/mask_rcnn_cosine.yaml" in line
