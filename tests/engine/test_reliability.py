"""What a long run must never do: train or evaluate the wrong weights, hide why it stopped, write a
poisoned checkpoint, resume differently, or find bad data only after training. Each case runs
tools/train_net.py as a user does and checks the exit code, the one error line and the files left."""
import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_TRAINING, run_tool

CONFIG = "configs/synthetic/deeplab_v3_plus.yaml"
DISALIGN = "configs/synthetic/disalign_deeplab.yaml"
ADE = "synthetic/ADEChallengeData2016"


def _train(*opts, flags=(), config=CONFIG, datasets_root=None, check=False, num_gpus=1, timeout=300):
    # --dist-url auto: a free port, so that runs side by side (tests, other users) never collide.
    return run_tool("train_net.py", "--config-file", config, "--num-gpus", num_gpus, "--dist-url", "auto",
                    *flags, *TINY_TRAINING,
                    *opts, datasets_root=datasets_root, check=check, timeout=timeout)


def _one_line_error(proc, *expected):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for text in expected:
        assert str(text) in lines[0], lines[0]
    return lines[0]


def _no_training_started(output_dir):
    return not list(output_dir.glob("model_*.pth")) and not (output_dir / "last_checkpoint").exists()


def _copy_data(datasets_root, tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(datasets_root, root)
    return root


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# 1. Weights of another model -------------------------------------------------------------------

@pytest.fixture
def mask_rcnn_like_checkpoint(tmp_path):
    path = tmp_path / "mask_rcnn.pth"
    torch.save({"model": {"roi_heads.box_predictor.cls_score.weight": torch.zeros(20, 8),
                          "backbone.bottom_up.stem.conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    return path


@pytest.fixture
def five_class_checkpoint(trained_baseline, tmp_path):
    """The baseline with its classifier cut to 5 classes: a DeepLab of another class count."""
    checkpoint = torch.load(trained_baseline / "model_final.pth", map_location="cpu", weights_only=True)
    for key in ("sem_seg_head.predictor.weight", "sem_seg_head.predictor.bias"):
        checkpoint["model"][key] = checkpoint["model"][key][:5]
    path = tmp_path / "five_classes.pth"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("eval_only", [False, True], ids=["stage2", "eval_only"])
def test_weights_of_another_model_are_refused(eval_only, mask_rcnn_like_checkpoint, datasets_root, tmp_path):
    out = tmp_path / "out"
    proc = _train(*([] if eval_only else ["SOLVER.MAX_ITER", 2]), "MODEL.WEIGHTS", mask_rcnn_like_checkpoint, "OUTPUT_DIR", out,
                  flags=["--eval-only"] if eval_only else [], config=DISALIGN, datasets_root=datasets_root)
    _one_line_error(proc, mask_rcnn_like_checkpoint, "does not fit this model", "missing from the file",
                    "backbone.stem.conv1.weight")
    assert _no_training_started(out) and not (out / "inference").exists()


def test_stage2_refuses_a_deeplab_of_another_class_count(five_class_checkpoint, datasets_root, tmp_path):
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 2, "MODEL.WEIGHTS", five_class_checkpoint, "OUTPUT_DIR", out,
                  config=DISALIGN, datasets_root=datasets_root)
    _one_line_error(proc, "2 of another shape", "sem_seg_head.predictor.weight", "(5, 64, 1, 1)")
    assert _no_training_started(out)


def test_eval_only_without_weights_is_refused(datasets_root, tmp_path):
    proc = _train("OUTPUT_DIR", tmp_path / "out", flags=["--eval-only"], datasets_root=datasets_root)
    _one_line_error(proc, "--eval-only needs MODEL.WEIGHTS")
    proc = _train("MODEL.WEIGHTS", tmp_path / "absent.pth", "OUTPUT_DIR", tmp_path / "out",
                  flags=["--eval-only"], datasets_root=datasets_root)
    _one_line_error(proc, tmp_path / "absent.pth", "does not exist")
    assert not (tmp_path / "out" / "inference").exists()


def test_stage2_on_its_own_stage1_loads_with_only_the_calibration_missing(trained_baseline, datasets_root,
                                                                         tmp_path):
    proc = _train("SOLVER.MAX_ITER", 1, "MODEL.WEIGHTS", trained_baseline / "model_final.pth",
                  "OUTPUT_DIR", tmp_path, config=DISALIGN, datasets_root=datasets_root, check=True)
    assert (tmp_path / "model_final.pth").is_file(), proc.stderr[-2000:]


# 4. Divergence ---------------------------------------------------------------------------------

def test_divergence_leaves_only_finite_checkpoints(datasets_root, tmp_path):
    proc = _train("SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 1, "SOLVER.BASE_LR", 1e12,
                  "SOLVER.WARMUP_ITERS", 0, "OUTPUT_DIR", tmp_path, datasets_root=datasets_root)
    line = _one_line_error(proc, "diverged", "iteration", "SOLVER.BASE_LR")
    for path in tmp_path.glob("*.pth"):
        weights = _weights(path)
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), (path, line)
    if (tmp_path / "last_checkpoint").exists():
        assert (tmp_path / (tmp_path / "last_checkpoint").read_text()).is_file()


# 5. Exact resume -------------------------------------------------------------------------------

RESUME = ["SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 3, "TEST.EVAL_PERIOD", 0,
          "DATALOADER.NUM_WORKERS", 1, "SEED", 3]


def test_resume_from_a_periodic_checkpoint_ends_with_identical_weights(datasets_root, tmp_path):
    full = tmp_path / "full"
    _train(*RESUME, "OUTPUT_DIR", full, datasets_root=datasets_root, check=True)
    # As if killed after the checkpoint of iteration 3: only that checkpoint is left.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(full / "model_0000002.pth", cut)
    (cut / "last_checkpoint").write_text("model_0000002.pth")
    shutil.copy(full / "class_stats.json", cut)
    _train(*RESUME, "OUTPUT_DIR", cut, flags=["--resume"], datasets_root=datasets_root, check=True)
    uninterrupted, resumed = _weights(full / "model_final.pth"), _weights(cut / "model_final.pth")
    assert uninterrupted.keys() == resumed.keys()
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)
    # and the run did move the weights after the checkpoint (the comparison is not vacuous)
    at_cut = _weights(full / "model_0000002.pth")
    assert not all(torch.equal(at_cut[k], resumed[k]) for k in resumed)


def test_resume_with_a_larger_max_iter_continues_training(datasets_root, tmp_path):
    _train("SOLVER.MAX_ITER", 2, "OUTPUT_DIR", tmp_path, datasets_root=datasets_root, check=True)
    proc = _train("SOLVER.MAX_ITER", 4, "OUTPUT_DIR", tmp_path, flags=["--resume"], datasets_root=datasets_root,
                  check=True)
    assert "Starting training from iteration 2" in proc.stdout + proc.stderr
    assert torch.load(tmp_path / "model_final.pth", map_location="cpu",
                      weights_only=True)["trainer"]["iteration"] == 3


# 6. Errors found before the first iteration ----------------------------------------------------

def _corrupt_label(path, value=42):
    label = np.array(Image.open(path))
    label[0, 0] = value
    Image.fromarray(label).save(path)


def test_bad_validation_label_is_found_before_training(datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    bad = sorted((root / ADE / "annotations_detectron2/validation").glob("*.png"))[2]
    _corrupt_label(bad)
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out, datasets_root=root)
    _one_line_error(proc, bad, "42")
    assert _no_training_started(out)


def test_empty_validation_set_is_found_before_training(datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    for folder in (root / ADE / "images/validation", root / ADE / "annotations_detectron2/validation"):
        for f in folder.iterdir():
            f.unlink()
    out = tmp_path / "out"
    _one_line_error(_train("SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out, datasets_root=root),
                    "synthetic_ade_sem_seg_val")
    assert _no_training_started(out)


def test_num_classes_not_the_datasets_is_refused(datasets_root, tmp_path):
    out = tmp_path / "out"
    proc = _train("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 12, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out,
                  datasets_root=datasets_root)
    _one_line_error(proc, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "19")
    assert _no_training_started(out)


def _stats_copy(trained_baseline, tmp_path, change):
    data = json.loads((trained_baseline / "class_stats.json").read_text())
    change(data)
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("case,expected", [
    ("group_id", "outside 0..18"), ("all_zero", "every count is 0"),
    ("negative", "found -5"), ("not_a_number", "found 'many'"),
])
def test_malformed_class_statistics_are_refused(case, expected, trained_baseline, datasets_root, tmp_path):
    changes = {
        "group_id": lambda d: d["groups"]["tail"].append(40),
        "all_zero": lambda d: d.update(counts=[0] * 19),
        "negative": lambda d: d["counts"].__setitem__(3, -5),
        "not_a_number": lambda d: d["counts"].__setitem__(3, "many"),
    }
    stats = _stats_copy(trained_baseline, tmp_path, changes[case])
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 2, "MODEL.LONG_TAIL.CLASS_STATS", stats, "OUTPUT_DIR", out,
                  datasets_root=datasets_root)
    _one_line_error(proc, stats, expected, "compute_class_stats.py")
    assert _no_training_started(out)


def test_lvis_categories_without_frequency_are_found_before_training(datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    val = root / "synthetic/lvis/lvis_v1_val.json"
    data = json.loads(val.read_text())
    for category in data["categories"]:
        category.pop("frequency", None)
    val.write_text(json.dumps(data))
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 1, "OUTPUT_DIR", out, config="configs/synthetic/mask_rcnn_baseline.yaml",
                  datasets_root=root)
    _one_line_error(proc, val, "frequency")
    assert _no_training_started(out)


# 7. One line naming the cause, on one process and on several ----------------------------------

@pytest.mark.parametrize("num_gpus", [1, 2])
def test_truncated_image_is_one_line_error(num_gpus, datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    images = root / ADE / "images/training"
    for image in images.glob("*.jpg"):  # every image, so that the first batch of each process meets one
        image.write_bytes(image.read_bytes()[:200])
    proc = _train("SOLVER.MAX_ITER", 2, "OUTPUT_DIR", tmp_path / "out", datasets_root=root,
                  num_gpus=num_gpus, timeout=120)
    _one_line_error(proc, str(images), "not a readable image", "replace the file")


def test_label_of_another_size_is_one_line_error(datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    labels = root / ADE / "annotations_detectron2/training"
    for label in labels.glob("*.png"):
        Image.fromarray(np.array(Image.open(label))[:20, :24]).save(label)
    proc = _train("SOLVER.MAX_ITER", 2, "OUTPUT_DIR", tmp_path / "out", datasets_root=root)
    _one_line_error(proc, str(labels), "(24, 20)", "(32, 32)", "their image's size")


def test_negative_blv_sigma_names_the_key(datasets_root, tmp_path):
    proc = _train("MODEL.LONG_TAIL.BLV.ENABLED", "True", "MODEL.LONG_TAIL.BLV.SIGMA", -1.0,
                  "SOLVER.MAX_ITER", 1, "OUTPUT_DIR", tmp_path / "out", datasets_root=datasets_root)
    _one_line_error(proc, "MODEL.LONG_TAIL.BLV.SIGMA")
    assert not (tmp_path / "out" / "class_stats.json").exists()  # refused before any label was counted


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text('_BASE_: "x.yaml"\nSOLVER:\n  BASE_LR: [0.01\n  MAX_ITER: 3\n')
    proc = run_tool("train_net.py", "--config-file", config, check=False)
    _one_line_error(proc, config, "line", "not valid YAML")


def test_output_dir_that_is_a_file_is_refused(datasets_root, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("")
    _one_line_error(_train("SOLVER.MAX_ITER", 1, "OUTPUT_DIR", target, datasets_root=datasets_root),
                    target, "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_unwritable_output_dir_is_refused(datasets_root, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _one_line_error(_train("SOLVER.MAX_ITER", 1, "OUTPUT_DIR", locked / "run", datasets_root=datasets_root),
                    locked / "run", "cannot be written")


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_checkpoint_is_one_line_error(damage, trained_baseline, datasets_root, tmp_path):
    weights = tmp_path / "model_final.pth"
    data = (trained_baseline / "model_final.pth").read_bytes()
    weights.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    proc = _train("MODEL.WEIGHTS", weights, "OUTPUT_DIR", tmp_path / "out", flags=["--eval-only"],
                  datasets_root=datasets_root)
    _one_line_error(proc, weights, "empty" if damage == "empty" else "cannot be read")


# 8. Missing files ------------------------------------------------------------------------------

def test_a_missing_label_is_refused_unless_allowed(datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    label = sorted((root / ADE / "annotations_detectron2/validation").glob("*.png"))[0]
    label.unlink()
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 1, "OUTPUT_DIR", out, datasets_root=root)
    _one_line_error(proc, label.stem, "1 images without a label", "DATASETS.ALLOW_MISSING_FILES")
    assert _no_training_started(out)
    _train("SOLVER.MAX_ITER", 1, "DATASETS.ALLOW_MISSING_FILES", "True", "OUTPUT_DIR", out,
           datasets_root=root, check=True)
    assert (out / "model_final.pth").is_file()


# 10. File modes --------------------------------------------------------------------------------

def test_outputs_are_readable_by_others(trained_baseline):
    for path in [trained_baseline / "class_stats.json", trained_baseline / "model_final.pth",
                 trained_baseline / "last_checkpoint", trained_baseline / "config.yaml",
                 trained_baseline / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.mark.parametrize("key, value", [("MODEL.MEDOE.EXPERT_CHANNELS", -8),
                                        ("MODEL.MEDOE.ENSEMBLE", "vote")])
def test_wrong_medoe_value_stops_the_run_before_any_label_is_counted(key, value, datasets_root, tmp_path):
    out = tmp_path / "out"
    proc = _train(key, value, "SOLVER.MAX_ITER", 1, "OUTPUT_DIR", out,
                  config="configs/synthetic/medoe_deeplab.yaml", datasets_root=datasets_root)
    _one_line_error(proc, key)
    assert not (out / "class_stats.json").exists()  # refused before the statistics were counted
