"""Evaluation through Detectron2's own Cityscapes registration, pointed at the synthetic files.

DETECTRON2_DATASETS=<root>/synthetic makes Detectron2's builtin ``cityscapes_fine_sem_seg_val``
read ``<root>/synthetic/cityscapes`` (leftImg8bit + gtFine with labelIds, labelTrainIds), so a
``configs/cityscapes`` config evaluates as it would on the real set: cityscapesscripts' official
metrics (key ``sem_seg``) beside the long-tail ones (key ``sem_seg_long_tail``).
"""
import json
import os

import pytest
import torch

from conftest import REPO, run_tool
from longtailseg import add_longtailseg_config

from detectron2.config import get_cfg
from detectron2.modeling import build_model

DATASET = "cityscapes_fine_sem_seg_val"
CONFIG = "configs/cityscapes/deeplab_v3_plus_R_50.yaml"


def _config(path, *opts):
    cfg = get_cfg()
    add_longtailseg_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, path))
    cfg.merge_from_list(list(opts))
    return cfg


def _detectron2_cityscapes_evaluator_imports_internal_modules():
    """Detectron2's main branch (2026-06) imports ``deeplearning.projects.cityscapesApi`` (a
    module only its authors have) in CityscapesSemSegEvaluator.process."""
    import detectron2.evaluation.cityscapes_evaluation as module

    with open(module.__file__) as f:
        return "deeplearning.projects" in f.read()


@pytest.mark.timeout(300)
@pytest.mark.skipif(_detectron2_cityscapes_evaluator_imports_internal_modules(),
                    reason="this Detectron2's CityscapesSemSegEvaluator imports a module that is not published")
def test_cityscapes_config_eval_only_reports_official_and_long_tail_metrics(datasets_root, tmp_path):
    out = tmp_path / "out"
    # Random weights (saved, since --eval-only refuses to evaluate an unloaded model) on CPU at
    # 32 px: only the evaluation is under test.
    weights = tmp_path / "random.pth"
    torch.manual_seed(0)
    torch.save({"model": build_model(_config(CONFIG, "MODEL.DEVICE", "cpu")).state_dict()}, weights)
    proc = run_tool(
        "train_net.py", "--config-file", CONFIG, "--eval-only",
        "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", 32, "INPUT.MAX_SIZE_TEST", 32,
        "DATALOADER.NUM_WORKERS", 0, "DATALOADER.CLASS_STATS_WORKERS", 1, "OUTPUT_DIR", out,
        datasets_root=datasets_root / "synthetic",
    )
    log = proc.stdout + proc.stderr
    # Both evaluators' results reach Detectron2's summary, each under its own key.
    assert "copypaste: Task: sem_seg\n" in log.replace("\r", "")
    assert "copypaste: Task: sem_seg_long_tail" in log

    folder = out / "inference" / DATASET
    official = json.loads((folder / "cityscapes_results.json").read_text())["sem_seg"]
    long_tail = json.loads((folder / "sem_seg_results.json").read_text())
    assert set(official) == {"IoU", "iIoU", "IoU_sup", "iIoU_sup"}
    assert long_tail["dataset"] == DATASET and "mIoU-tail" in long_tail["sem_seg"]
    assert len(long_tail["per_class"]) == 19 and long_tail["per_class"][0]["name"] == "road"
    # cityscapesscripts' class IoU is the standard one (a class predicted but absent scores 0,
    # void ground truth is no false positive), computed from the labelId files: it must equal
    # ours, computed from the labelTrainId files.
    assert long_tail["sem_seg"]["mIoU"] == pytest.approx(official["IoU"], abs=1e-9)
    assert 0 < official["IoU"] < 100


def test_unpatched_cityscapesscripts_is_refused_before_inference(tmp_path, monkeypatch):
    import numpy as np

    from longtailseg.errors import LongTailSegError
    from longtailseg.evaluation.build import check_cityscapes_evaluation_runs

    script = tmp_path / "cityscapesscripts" / "evaluation" / "evalPixelLevelSemanticLabeling.py"
    script.parent.mkdir(parents=True)
    script.write_text("mask = np.in1d( a , b ).reshape(a.shape)\n")
    monkeypatch.delattr(np, "in1d", raising=False)  # numpy >= 2.4
    with pytest.raises(LongTailSegError, match=r"evalPixelLevelSemanticLabeling\.py calls np\.in1d.*"
                                               r"tools/patch_legacy_sources\.py") as excinfo:
        check_cityscapes_evaluation_runs(str(script.parent.parent))
    assert "\n" not in str(excinfo.value)
    script.write_text("mask = np.isin( a , b ).reshape(a.shape)\n")  # as the patch tool leaves it
    check_cityscapes_evaluation_runs(str(script.parent.parent))
