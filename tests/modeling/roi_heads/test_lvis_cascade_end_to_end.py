"""Cascade Mask R-CNN with the long-tail heads end to end through tools/train_net.py on a small
synthetic LVIS set: stage 1 and LVISEvaluator's APr / APc / APf, DisAlign stage 2 (only every
stage's calibration moves), NorCal evaluated post hoc on the stage-1 weights, and Detectron2
main's LVIS recipe (sigmoid CE, federated loss, REPEAT_SQRT) on Detectron2 v0.6."""
import json

import pytest
import torch

from conftest import TINY_TRAINING, run_tool
from longtailseg.data.synthetic.generator import generate

CASCADE = "configs/synthetic/cascade_mask_rcnn_baseline.yaml"
METRICS = ["AP", "AP50", "APr", "APc", "APf"]
# A tiny learning rate: a from-scratch model's first steps make it predict only background,
# and the evaluation needs detections to score. Fewer detections keep the evaluation short.
SHORT = [*TINY_TRAINING, "SOLVER.MAX_ITER", 3, "SOLVER.BASE_LR", 1e-5, "TEST.DETECTIONS_PER_IMAGE", 50]


@pytest.fixture(scope="module")
def lvis_root(tmp_path_factory):
    """A synthetic LVIS set with f, c and r categories in both splits."""
    root = tmp_path_factory.mktemp("lvis_datasets")
    generate(str(root / "synthetic"), progress=False, seed=0, num_classes=19, num_train=160,
             num_val=12, size=32)
    return root


def _lvis_results(output_dir):
    return json.loads((output_dir / "inference" / "synthetic_lvis_val" / "lvis_results.json").read_text())


def _assert_ap_per_frequency_group(output_dir):
    results = _lvis_results(output_dir)
    for task in ("bbox", "segm"):
        for metric in METRICS:
            value = results[task][metric]
            assert 0.0 <= value <= 100.0, (task, metric, value)  # -100 or nan: group not evaluated
    return results


@pytest.fixture(scope="module")
def cascade_run(lvis_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade_mask_rcnn_baseline")
    run_tool("train_net.py", "--config-file", CASCADE, *SHORT, "OUTPUT_DIR", out, datasets_root=lvis_root)
    return out


def test_cascade_trains_and_reports_ap_per_frequency_group(cascade_run):
    assert (cascade_run / "model_final.pth").is_file()
    _assert_ap_per_frequency_group(cascade_run)
    metrics = [json.loads(line) for line in (cascade_run / "metrics.json").read_text().splitlines()]
    assert any("loss_cls_stage2" in m for m in metrics)


def test_cascade_disalign_stage2_trains_only_every_stages_calibration(cascade_run, lvis_root, tmp_path):
    proc = run_tool("train_net.py", "--config-file", "configs/synthetic/cascade_mask_rcnn_disalign.yaml",
                    *SHORT, "SOLVER.BASE_LR", 0.02, "MODEL.WEIGHTS", cascade_run / "model_final.pth",
                    "OUTPUT_DIR", tmp_path, datasets_root=lvis_root)
    log = proc.stdout + proc.stderr
    assert "not used by the model" not in log
    stage1 = torch.load(cascade_run / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    stage2 = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    new = set(stage2) - set(stage1)
    assert new == {f"roi_heads.box_predictor.{k}.long_tail.calibration.{p}" for k in range(3)
                   for p in ("alpha", "beta", "confidence.weight", "confidence.bias")}
    frozen = [k for k in stage1 if not k.endswith("num_batches_tracked")]
    assert any("running_var" in k for k in frozen) and any("mask_head" in k for k in frozen)
    for key in frozen:
        assert torch.equal(stage1[key], stage2[key]), f"stage 2 changed frozen {key}"
    for k in range(3):
        assert not torch.equal(stage2[f"roi_heads.box_predictor.{k}.long_tail.calibration.beta"], torch.zeros(19))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    trained = {key for m in metrics for key in m if key.startswith("loss_")}
    assert trained == {"loss_cls_stage0", "loss_cls_stage1", "loss_cls_stage2"}
    _assert_ap_per_frequency_group(tmp_path)


def test_norcal_evaluates_the_stage1_weights_post_hoc(cascade_run, lvis_root, tmp_path):
    run_tool("train_net.py", "--config-file", CASCADE, "--eval-only", *SHORT,
             "MODEL.ROI_BOX_HEAD.NORCAL.ENABLED", True, "MODEL.WEIGHTS", cascade_run / "model_final.pth",
             "OUTPUT_DIR", tmp_path, datasets_root=lvis_root)
    assert not (tmp_path / "model_final.pth").exists()
    assert (tmp_path / "class_stats.json").is_file()  # the instance counts NorCal divides by
    calibrated = _assert_ap_per_frequency_group(tmp_path)
    assert calibrated != _lvis_results(cascade_run)


def test_detectron2_main_lvis_recipe_trains_on_this_detectron2(lvis_root, tmp_path):
    run_tool("train_net.py", "--config-file", "configs/synthetic/mask_rcnn_fed_loss.yaml", *SHORT,
             "DATALOADER.REPEAT_SQRT", False, "OUTPUT_DIR", tmp_path, datasets_root=lvis_root)
    config = (tmp_path / "config.yaml").read_text()
    assert "USE_FED_LOSS: true" in config and "REPEAT_SQRT: false" in config
    assert json.loads((tmp_path / "class_stats.json").read_text())["image_counts"]
    _assert_ap_per_frequency_group(tmp_path)
