"""DisAlign stage 2 from a stage-1 checkpoint, end to end through tools/train_net.py."""
import json

import torch

from conftest import TINY_TRAINING, run_tool

DISALIGN = "configs/synthetic/disalign_deeplab.yaml"


def test_stage1_then_disalign_stage2_then_evaluation(trained_baseline, datasets_root, tmp_path):
    proc = run_tool("train_net.py", "--config-file", DISALIGN, *TINY_TRAINING, "SOLVER.MAX_ITER", 3,
                    "MODEL.WEIGHTS", trained_baseline / "model_final.pth", "OUTPUT_DIR", tmp_path,
                    datasets_root=datasets_root)
    log = proc.stdout + proc.stderr
    assert "sem_seg_head.long_tail.calibration.{alpha, beta}" in log  # new keys named when loading stage 1
    stage1 = torch.load(trained_baseline / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    stage2 = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    for key, value in stage1.items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, stage2[key]), f"stage 2 changed frozen {key}"
    assert not torch.equal(stage2["sem_seg_head.long_tail.calibration.beta"], torch.zeros(19))
    results = json.loads((tmp_path / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json").read_text())
    assert "mACC-tail" in results["sem_seg"]


def test_stage2_without_stage1_weights_says_how_to_make_them(tmp_path, datasets_root):
    proc = run_tool("train_net.py", "--config-file", DISALIGN, "MODEL.WEIGHTS", tmp_path / "none.pth",
                    "OUTPUT_DIR", tmp_path, datasets_root=datasets_root, check=False)
    assert proc.returncode == 2
    line = [l for l in proc.stderr.splitlines() if l.startswith("error:")][0]
    assert str(tmp_path / "none.pth") in line
    assert "--config-file configs/synthetic/deeplab_v3_plus.yaml" in line
