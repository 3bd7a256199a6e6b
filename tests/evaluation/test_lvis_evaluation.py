"""The LVIS evaluator: Detectron2's numbers unchanged, and each category's AP beside them."""
import json

import numpy as np
import pytest
import torch

from longtailseg.evaluation.lvis_evaluation import PER_CATEGORY_FILE_NAME, SavedLVISEvaluator

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import LVISEvaluator
from detectron2.structures import Boxes, BoxMode, Instances


def _noisy_detections(dataset, seed=0):
    """(inputs, outputs) as a detector gives them: each ground-truth box jittered, with a random
    score and, for a third of them, a wrong class."""
    rng = np.random.default_rng(seed)
    num_classes = len(MetadataCatalog.get(dataset).thing_classes)
    inputs, outputs = [], []
    for record in DatasetCatalog.get(dataset):
        classes = np.array([a["category_id"] for a in record["annotations"]], dtype=np.int64)
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                          for a in record["annotations"]], dtype=np.float32).reshape(-1, 4)
        boxes = boxes + rng.normal(0, 2, boxes.shape).astype(np.float32)
        wrong = rng.random(len(classes)) < 0.33
        classes = np.where(wrong, rng.integers(0, num_classes, len(classes)), classes)
        instances = Instances((record["height"], record["width"]), pred_boxes=Boxes(torch.from_numpy(boxes)),
                              scores=torch.from_numpy(rng.random(len(classes)).astype(np.float32)),
                              pred_classes=torch.from_numpy(classes))
        inputs.append({"image_id": record["image_id"]})
        outputs.append({"instances": instances})
    return inputs, outputs


def _evaluate(evaluator, inputs, outputs):
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def test_same_numbers_as_detectron2_and_the_ap_of_every_category(datasets_root, tmp_path):
    dataset = "synthetic_lvis_val"
    inputs, outputs = _noisy_detections(dataset)
    theirs = _evaluate(LVISEvaluator(dataset, tasks=("bbox",), distributed=False,
                                     output_dir=str(tmp_path / "d2")), inputs, outputs)
    ours = _evaluate(SavedLVISEvaluator(dataset, tasks=("bbox",), distributed=False,
                                        output_dir=str(tmp_path / "ours")), inputs, outputs)
    assert ours == theirs and 0 < ours["bbox"]["AP"] < 100
    saved = json.loads((tmp_path / "ours" / "lvis_results.json").read_text())
    assert saved == json.loads(json.dumps(ours))
    per_category = json.loads((tmp_path / "ours" / PER_CATEGORY_FILE_NAME).read_text())
    assert per_category["image_count_source"] == "annotation json"
    rows = per_category["bbox"]
    assert [r["name"] for r in rows] == list(MetadataCatalog.get(dataset).thing_classes)
    values = [r["AP"] for r in rows if r["AP"] is not None]
    # LVIS's AP is the mean of the categories' APs (every category evaluated at every IoU / recall)
    assert np.mean(values) == pytest.approx(ours["bbox"]["AP"], abs=1e-6)
    for group, key in (("r", "APr"), ("c", "APc"), ("f", "APf")):
        group_values = [r["AP"] for r in rows if r["frequency"] == group and r["AP"] is not None]
        if group_values:
            assert np.mean(group_values) == pytest.approx(ours["bbox"][key], abs=1e-6)


def test_plot_results_draws_the_rare_categories_from_the_saved_files(datasets_root, tmp_path):
    from conftest import run_tool

    dataset = "synthetic_lvis_val"
    inputs, outputs = _noisy_detections(dataset, seed=1)
    _evaluate(SavedLVISEvaluator(dataset, tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "run")),
              inputs, outputs)
    rows = json.loads((tmp_path / "run" / PER_CATEGORY_FILE_NAME).read_text())["bbox"]
    assert any(r["frequency"] == "r" and r["AP"] is not None for r in rows)
    proc = run_tool("plot_results.py", tmp_path / "run" / "lvis_results.json", "--names", "noisy",
                    "--output", tmp_path / "figures")
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["lvis_ap_groups.png", "lvis_rare_ap.png"]
    assert "lvis_rare_ap.png" in proc.stdout
