"""The second wave of bad inputs (issue 26): each ends in exit 2 and one line naming the file or key
and the fix, before the first iteration (no checkpoint written), or is read the way training reads
it. Each case runs the tool as a user does, on a damaged copy of the tiny synthetic data."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_TRAINING, run_tool

CONFIG = "configs/synthetic/deeplab_v3_plus.yaml"
MASK_RCNN = "configs/synthetic/mask_rcnn_baseline.yaml"
ADE = "synthetic/ADEChallengeData2016"
TRAIN_LABELS = f"{ADE}/annotations_detectron2/training"
VAL_LABELS = f"{ADE}/annotations_detectron2/validation"


def _train(*opts, flags=(), config=CONFIG, datasets_root=None, check=False, num_gpus=1):
    return run_tool("train_net.py", "--config-file", config, "--num-gpus", num_gpus, "--dist-url", "auto",
                    *flags, *TINY_TRAINING, *opts, datasets_root=datasets_root, check=check, timeout=300)


def _one_line_error(proc, *expected):
    """Exit 2, stderr ending in the one ``error:`` line holding ``expected``, no traceback."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:"), proc.stderr[-2000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [last]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for text in expected:
        assert str(text) in last, last
    return last


def _nothing_trained(output_dir):
    return (not list(output_dir.glob("model_*.pth")) and not (output_dir / "last_checkpoint").exists()
            and not list(output_dir.glob("*.tmp*")))


def _copy_data(datasets_root, tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(datasets_root, root)
    return root


# Config values Detectron2 takes and fails on later -----------------------------------------------

@pytest.mark.parametrize("key, value, num_gpus, expected", [
    ("SOLVER.MAX_ITER", 0, 1, "--eval-only"),
    ("SOLVER.CHECKPOINT_PERIOD", 0, 1, ">= 1"),
    ("DATALOADER.NUM_WORKERS", -1, 1, "set it to 0"),
    ("SOLVER.IMS_PER_BATCH", 3, 2, "SOLVER.IMS_PER_BATCH 2"),
])
def test_unusable_schedule_and_loader_values_name_the_key(key, value, num_gpus, expected, datasets_root,
                                                         tmp_path):
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 2, key, value, "OUTPUT_DIR", out, num_gpus=num_gpus,
                  datasets_root=datasets_root)
    _one_line_error(proc, key, expected)
    assert _nothing_trained(out) and not (out / "class_stats.json").exists()  # before any label is read


def test_config_file_given_twice_is_refused(datasets_root, tmp_path):
    out = tmp_path / "out"
    proc = run_tool("train_net.py", "--config-file", "configs/synthetic/blv_deeplab.yaml", "--config-file", CONFIG,
                    "OUTPUT_DIR", out, datasets_root=datasets_root, check=False)
    _one_line_error(proc, "--config-file", "blv_deeplab.yaml", CONFIG)
    assert not out.exists()


# Label files -----------------------------------------------------------------------------------

def _first(folder):
    return sorted(folder.glob("*.png"))[0]


def test_truncated_validation_label_names_the_file(datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    bad = _first(root / VAL_LABELS)
    bad.write_bytes(bad.read_bytes()[:60])
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 2, "DATALOADER.CLASS_STATS_WORKERS", 2, "OUTPUT_DIR", out, datasets_root=root)
    _one_line_error(proc, bad, "cannot be read", "replace the file")  # from the pre-flight's pool
    assert _nothing_trained(out)


def test_rgb_validation_label_is_found_by_the_preflight(datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    bad = _first(root / VAL_LABELS)
    Image.open(bad).convert("RGB").save(bad)  # values in range: only the mode is wrong
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out, datasets_root=root)
    _one_line_error(proc, bad, "RGB image", "single-channel")
    assert _nothing_trained(out)


def _to_palette(path):
    """The same class ids stored as a palette PNG whose colours' grey levels are not the ids."""
    ids = np.asarray(Image.open(path))
    image = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids, np.uint8).tobytes())
    palette = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)
    image.putpalette(palette.ravel().tolist())
    image.save(path)
    assert np.array_equal(np.asarray(Image.open(path)), ids) and Image.open(path).mode == "P"


def test_palette_labels_are_read_as_their_indices_everywhere(trained_baseline, datasets_root, tmp_path):
    """Counting, the pre-flight, the training mapper and the evaluator read palette PNGs the one
    way: their indices (Detectron2's mapper alone would see the palette's grey levels)."""
    root = _copy_data(datasets_root, tmp_path)
    for folder in (TRAIN_LABELS, VAL_LABELS):
        for path in (root / folder).glob("*.png"):
            _to_palette(path)
    out = tmp_path / "out"
    _train("SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out, datasets_root=root, check=True)
    counted = json.loads((out / "class_stats.json").read_text())
    assert counted["counts"] == json.loads((trained_baseline / "class_stats.json").read_text())["counts"]
    assert (out / "model_final.pth").is_file()
    results = json.loads((out / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json").read_text())
    assert results["sem_seg"]["mIoU"] >= 0


def test_bad_training_label_with_class_stats_given_is_found_before_training(trained_baseline, datasets_root,
                                                                            tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    bad = sorted((root / TRAIN_LABELS).glob("*.png"))[5]
    label = np.array(Image.open(bad))
    label[0, 0] = 42
    Image.fromarray(label).save(bad)
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 2, "MODEL.LONG_TAIL.CLASS_STATS", trained_baseline / "class_stats.json",
                  "OUTPUT_DIR", out, datasets_root=root)
    _one_line_error(proc, bad, "42")
    assert _nothing_trained(out)


def test_png_training_image_in_the_ade20k_layout_is_refused(datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    jpg = sorted((root / ADE / "images/training").glob("*.jpg"))[3]
    png = jpg.with_suffix(".png")
    Image.open(jpg).save(png)
    jpg.unlink()
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out, datasets_root=root)
    _one_line_error(proc, png, "ADE20K images are .jpg")
    assert _nothing_trained(out)


# LVIS json defects -----------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("defect, expected", [
    ("empty_segmentation", "empty segmentation"),
    ("unknown_category", "category_id 9999"),
])
def test_lvis_annotation_defects_name_the_json_and_the_annotation(split, defect, expected, datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    path = root / f"synthetic/lvis/lvis_v1_{split}.json"
    data = json.loads(path.read_text())
    annotation = data["annotations"][3]
    if defect == "empty_segmentation":
        annotation["segmentation"] = []
    else:
        annotation["category_id"] = 9999
    path.write_text(json.dumps(data))
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 1, "OUTPUT_DIR", out, config=MASK_RCNN, datasets_root=root)
    _one_line_error(proc, path, f"annotation {annotation['id']}", expected)
    assert _nothing_trained(out)


def test_truncated_lvis_json_names_the_file(datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    path = root / "synthetic/lvis/lvis_v1_train.json"
    path.write_text(path.read_text()[:500])
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 1, "OUTPUT_DIR", out, config=MASK_RCNN, datasets_root=root)
    _one_line_error(proc, path, "not valid JSON")
    assert _nothing_trained(out)


# Class-statistics files ------------------------------------------------------------------------

@pytest.mark.parametrize("damage, expected", [
    ("groups_a_list", "'groups' must be an object"),
    ("truncated", "not valid JSON"),
    ("a_list", "holds a JSON list"),
    ("group_not_a_list", "group 'tail' must be a list"),
])
def test_malformed_class_statistics_name_the_file(damage, expected, trained_baseline, datasets_root, tmp_path):
    text = (trained_baseline / "class_stats.json").read_text()
    data = json.loads(text)
    stats = tmp_path / "stats.json"
    if damage == "groups_a_list":
        data["groups"] = [data["groups"]["head"], data["groups"]["body"], data["groups"]["tail"]]
    elif damage == "a_list":
        data = [data]
    elif damage == "group_not_a_list":
        data["groups"]["tail"] = 7
    stats.write_text(text[: len(text) // 2] if damage == "truncated" else json.dumps(data))
    out = tmp_path / "out"
    proc = _train("SOLVER.MAX_ITER", 2, "MODEL.LONG_TAIL.CLASS_STATS", stats, "OUTPUT_DIR", out,
                  datasets_root=datasets_root)
    _one_line_error(proc, stats, expected, "compute_class_stats.py")
    assert _nothing_trained(out)


def test_stage2_counts_again_when_the_statistics_beside_its_weights_describe_other_data(
        trained_baseline, datasets_root, tmp_path):
    root = _copy_data(datasets_root, tmp_path)
    label = _first(root / TRAIN_LABELS)  # the training data changes after stage 1: one pair fewer
    (root / ADE / "images/training" / f"{label.stem}.jpg").unlink()
    label.unlink()
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    for name in ("model_final.pth", "class_stats.json"):
        shutil.copy(trained_baseline / name, stage1)
    out = tmp_path / "stage2"
    proc = _train("SOLVER.MAX_ITER", 1, "MODEL.WEIGHTS", stage1 / "model_final.pth", "OUTPUT_DIR", out,
                  config="configs/synthetic/disalign_deeplab.yaml", datasets_root=root, check=True)
    assert f"not using {stage1 / 'class_stats.json'}" in proc.stdout + proc.stderr
    stale = json.loads((stage1 / "class_stats.json").read_text())
    fresh = json.loads((out / "class_stats.json").read_text())
    assert fresh["num_images"] == stale["num_images"] - 1 and fresh["counts"] != stale["counts"]


# Tools -----------------------------------------------------------------------------------------

def test_demo_output_naming_a_file_is_refused(trained_baseline, datasets_root, tmp_path):
    target = tmp_path / "drawings"
    target.write_text("notes")
    image = sorted((datasets_root / ADE / "images/validation").glob("*.jpg"))[0]
    proc = run_tool("demo.py", "--config-file", CONFIG, "--input", image, "--output", target,
                    "MODEL.WEIGHTS", trained_baseline / "model_final.pth", datasets_root=datasets_root, check=False)
    _one_line_error(proc, target, "is a file, not a folder")
    assert target.read_text() == "notes"


def test_plot_results_output_naming_a_file_is_refused(trained_baseline, tmp_path):
    target = tmp_path / "figures"
    target.write_text("notes")
    proc = run_tool("plot_results.py", trained_baseline, "--output", target, check=False)
    _one_line_error(proc, target, "is a file, not a folder")
    assert target.read_text() == "notes"


@pytest.mark.parametrize("tool", ["compare_results.py", "plot_results.py"])
@pytest.mark.parametrize("damage", ["truncated_results", "results_without_metrics"])
def test_comparison_tools_name_a_damaged_results_file(tool, damage, trained_baseline, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_baseline / "inference", run / "inference")
    results = run / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json"
    text = results.read_text()
    results.write_text(text[: len(text) // 2] if damage == "truncated_results" else json.dumps({"per_class": 3}))
    proc = run_tool(tool, run, *(["--output", tmp_path / "figures"] if tool == "plot_results.py" else []),
                    check=False)
    _one_line_error(proc, results)


@pytest.mark.parametrize("argv, repeated", [
    (["--config-file", "a.yaml", "--config", "b.yaml"], "--config-file"),  # an abbreviation
    (["--config-file=a.yaml", "--resume", "--config-file", "b.yaml"], "--config-file"),
    (["--num-gpus", "2", "--num-gpus=1", "--config-file", "a.yaml"], "--num-gpus"),
    (["--config-file", "a.yaml", "--resume", "--resume", "OUTPUT_DIR", "--config-file"], None),  # flag; override
])
def test_repeated_options_are_found_in_every_spelling(argv, repeated):
    from detectron2.engine import default_argument_parser

    from longtailseg.engine.config_checks import check_repeated_options
    from longtailseg.errors import ConfigError

    if repeated is None:
        check_repeated_options(default_argument_parser(), argv)
        return
    with pytest.raises(ConfigError, match=f"^{repeated} is given 2 times"):
        check_repeated_options(default_argument_parser(), argv)
