"""tools/train_net.py end to end on the tiny synthetic set, as a user runs it."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_TRAINING, run_tool

CONFIG = "configs/synthetic/deeplab_v3_plus.yaml"
GROUP_KEYS = ["mIoU-head", "mIoU-body", "mIoU-tail", "mACC-head", "mACC-body", "mACC-tail"]


def _results(output_dir, dataset="synthetic_ade_sem_seg_val"):
    with open(output_dir / "inference" / dataset / "sem_seg_results.json") as f:
        return json.load(f)["sem_seg"]


@pytest.fixture
def trained(trained_baseline):
    return trained_baseline


def test_training_writes_checkpoint_stats_and_long_tail_results(trained):
    assert (trained / "model_final.pth").is_file()
    stats = json.loads((trained / "class_stats.json").read_text())
    assert stats["dataset"] == "synthetic_ade_sem_seg_train" and stats["num_classes"] == 19
    results = _results(trained)
    for key in ["mIoU", "mACC", "pACC", "fwIoU"] + GROUP_KEYS:
        assert key in results, key
    assert 0 <= results["pACC"] <= 100


def test_log_has_the_per_class_table_most_frequent_class_first(trained):
    stats = json.loads((trained / "class_stats.json").read_text())
    log = (trained / "log.txt").read_text()
    table = log.split("per class, most frequent in training first:\n", 1)[1].splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:2 + stats["num_classes"]]]
    by_share = sorted(range(stats["num_classes"]), key=lambda c: -stats["frequencies"][c])
    assert [r[0] for r in rows] == [stats["class_names"][c] for c in by_share]
    group_of = {c: g for g, ids in stats["groups"].items() for c in ids}
    assert [r[1] for r in rows] == [group_of[c] for c in by_share]
    assert rows[0][2] == f"{100 * stats['frequencies'][by_share[0]]:.3f} %"


def test_eval_only_with_two_cpu_processes_matches_one(trained, datasets_root, tmp_path):
    weights = trained / "model_final.pth"
    metrics = {}
    for n in (1, 2):
        out = tmp_path / f"eval{n}"
        run_tool("train_net.py", "--config-file", CONFIG, "--eval-only", "--num-gpus", n, "--dist-url", "auto",
                 *TINY_TRAINING, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out, datasets_root=datasets_root)
        metrics[n] = _results(out)
    for key in ["mIoU", "mACC", "pACC", "fwIoU"] + GROUP_KEYS:
        assert metrics[1][key] == pytest.approx(metrics[2][key], abs=1e-9, nan_ok=True), key
    assert metrics[1] == pytest.approx(_results(trained), nan_ok=True)  # same weights, same numbers


def test_two_process_training_on_cpu(datasets_root, tmp_path):
    proc = run_tool("train_net.py", "--config-file", CONFIG, "--num-gpus", 2, "--dist-url", "auto",
                    *TINY_TRAINING, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", tmp_path, datasets_root=datasets_root)
    assert "World size: 2" in proc.stdout + proc.stderr
    assert (tmp_path / "model_final.pth").is_file()
    assert "mIoU-tail" in _results(tmp_path)


def test_two_process_second_stage_starts_from_the_stage1_weights(trained, datasets_root, tmp_path):
    """Under DDP the model is wrapped (its parameter names gain ``module.``): the new stage-2
    parameters must still be recognised as the only ones the stage-1 file lacks."""
    proc = run_tool("train_net.py", "--config-file", "configs/synthetic/disalign_deeplab.yaml", "--num-gpus", 2,
                    "--dist-url", "auto", *TINY_TRAINING, "SOLVER.MAX_ITER", 2,
                    "MODEL.WEIGHTS", trained / "model_final.pth", "OUTPUT_DIR", tmp_path,
                    datasets_root=datasets_root, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "World size: 2" in proc.stdout + proc.stderr
    assert (tmp_path / "model_final.pth").is_file() and "mIoU-tail" in _results(tmp_path)


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_missing_dataset_folder_is_one_line_error(tmp_path):
    proc = run_tool("train_net.py", "--config-file", CONFIG, "OUTPUT_DIR", tmp_path,
                    datasets_root=tmp_path / "nowhere", check=False)
    line = _one_line_error(proc)
    assert str(tmp_path / "nowhere" / "synthetic") in line and "make_synthetic_data.py" in line


def test_wrong_config_key_is_one_line_error(tmp_path):
    proc = run_tool("train_net.py", "--config-file", CONFIG, "MODEL.LONG_TAIL.CLASS_STAT", "x.json",
                    check=False)
    line = _one_line_error(proc)
    assert "MODEL.LONG_TAIL.CLASS_STAT" in line and "CONFIG_REFERENCE.md" in line


def test_option_after_the_overrides_is_one_line_error(tmp_path):
    proc = run_tool("train_net.py", "--config-file", CONFIG, "SOLVER.MAX_ITER", "3", "--eval-only",
                    check=False)
    line = _one_line_error(proc)
    assert "KEY VALUE pairs" in line and "--eval-only" in line


def test_wrongly_typed_config_value_is_one_line_error(tmp_path):
    proc = run_tool("train_net.py", "--config-file", CONFIG, "MODEL.LONG_TAIL.LOSS.PAT_CONSTANT", "1",
                    check=False)
    line = _one_line_error(proc)
    assert "MODEL.LONG_TAIL.LOSS.PAT_CONSTANT" in line and "1.0" in line


def test_mismatched_class_stats_file_is_one_line_error(datasets_root, tmp_path):
    stats_file = tmp_path / "lvis_stats.json"
    run_tool("compute_class_stats.py", "--dataset", "synthetic_lvis_train", "--output", stats_file,
             datasets_root=datasets_root)
    data = json.loads(stats_file.read_text())
    data["class_names"] = data["class_names"][:5]
    data["counts"], data["image_counts"] = data["counts"][:5], data["image_counts"][:5]
    data["groups"] = {group: [c for c in ids if c < 5] for group, ids in data["groups"].items()}
    stats_file.write_text(json.dumps(data))
    proc = run_tool("train_net.py", "--config-file", CONFIG, *TINY_TRAINING,
                    "MODEL.LONG_TAIL.CLASS_STATS", stats_file, "OUTPUT_DIR", tmp_path / "out",
                    datasets_root=datasets_root, check=False)
    line = _one_line_error(proc)
    assert str(stats_file) in line and "5 classes" in line and "compute_class_stats.py" in line


def _copy_with_bad_label(datasets_root, tmp_path, index=3):
    """A copy of the synthetic data whose training label ``index`` holds the value 42."""
    root = tmp_path / "datasets"
    shutil.copytree(datasets_root, root)
    labels = sorted((root / "synthetic/ADEChallengeData2016/annotations_detectron2/training").glob("*.png"))
    bad = labels[index]
    label = np.array(Image.open(bad))
    label[0, 0] = 42
    Image.fromarray(label).save(bad)
    return root, bad


def test_label_value_out_of_range_is_one_line_error(datasets_root, tmp_path):
    root, bad = _copy_with_bad_label(datasets_root, tmp_path)
    proc = run_tool("train_net.py", "--config-file", CONFIG, *TINY_TRAINING, "SOLVER.MAX_ITER", 1,
                    "OUTPUT_DIR", tmp_path / "out", datasets_root=root, check=False)
    # the class count scans every training label before the first step
    line = _one_line_error(proc)
    assert str(bad) in line and "42" in line and "NUM_CLASSES" in line


@pytest.mark.parametrize("where", ["counting", "loading"])
def test_a_failing_process_of_two_gives_its_one_line_error(where, datasets_root, trained, tmp_path):
    """The label error reaches the user whichever process meets it: while the main process counts
    the classes (the other waits), or while a data loader of either process maps the image
    (class statistics given, so nothing is counted first)."""
    root, bad = _copy_with_bad_label(datasets_root, tmp_path)
    stats = [] if where == "counting" else ["MODEL.LONG_TAIL.CLASS_STATS", trained / "class_stats.json"]
    if where == "loading":  # every training label is bad: each process fails in its first batch
        for label_file in bad.parent.glob("*.png"):
            label = np.array(Image.open(label_file))
            label[0, 0] = 42
            Image.fromarray(label).save(label_file)
    proc = run_tool("train_net.py", "--config-file", CONFIG, "--num-gpus", 2, "--dist-url", "auto",
                    *TINY_TRAINING, "SOLVER.MAX_ITER", 3, *stats, "OUTPUT_DIR", tmp_path / "out",
                    datasets_root=root, check=False, timeout=120)
    line = _one_line_error(proc)
    assert "42" in line and "NUM_CLASSES" in line and str(bad.parent) in line
    assert "Connection closed" not in proc.stderr
