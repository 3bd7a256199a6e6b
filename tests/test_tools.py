"""Small command-line tools: the comparison table, the loss benchmark, every tool's --help."""
import csv
import glob
import json
import os
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_tool


def _results(path, miou_tail, pacc=90.0, dice_err=0.25):
    sem_seg = {"mIoU": 50.0, "mACC": 60.0, "pACC": pacc, "mIoU-head": 90.0, "mIoU-body": 40.0,
               "mIoU-tail": miou_tail, "mACC-head": 95.0, "mACC-body": 50.0, "mACC-tail": None,
               "DiceErr": dice_err}
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"sem_seg": sem_seg}))


def test_compare_results_table(tmp_path):
    _results(tmp_path / "ce/inference/val_set/sem_seg_results.json", 1.5)
    _results(tmp_path / "blv/inference/val_set/sem_seg_results.json", 7.25)
    proc = run_tool("compare_results.py", tmp_path / "ce", tmp_path / "blv", "--names", "CE", "BLV")
    lines = proc.stdout.strip().splitlines()
    assert "mIoU-tail" in lines[0] and lines[2].startswith("| CE") and lines[3].startswith("| BLV")
    assert "7.25" in lines[3] and "1.50" in lines[2] and "n/a" in lines[3]


def test_compare_results_differences_include_pixel_accuracy_and_dice_error(tmp_path):
    """PAT's tables report mIoU, pACC and the Dice error: all three in the difference table,
    the Dice error to 3 decimals as in the main table."""
    for seed, (tail, pacc, dice) in enumerate([(1.0, 90.0, 0.250), (2.0, 91.0, 0.260)]):
        _results(tmp_path / f"ce{seed}/inference/val_set/sem_seg_results.json", tail, pacc, dice)
    for seed, (tail, pacc, dice) in enumerate([(7.0, 95.0, 0.100), (8.0, 96.0, 0.110)]):
        _results(tmp_path / f"pat{seed}/inference/val_set/sem_seg_results.json", tail, pacc, dice)
    proc = run_tool("compare_results.py", *(tmp_path / r for r in ("ce0", "ce1", "pat0", "pat1")),
                    "--names", "CE", "CE", "PAT", "PAT")
    differences = proc.stdout.split("Difference to CE")[1].strip().splitlines()
    header = [c.strip() for c in differences[1].strip("|").split("|")]
    cells = dict(zip(header, (c.strip() for c in differences[3].strip("|").split("|"))))
    assert cells["run"] == "PAT" and cells["mIoU-tail"] == "+6.00*"
    assert cells["pACC"] == "+5.00*" and cells["DiceErr"] == "-0.150*"


def test_compare_results_names_a_missing_run(tmp_path):
    proc = run_tool("compare_results.py", tmp_path / "absent", check=False)
    assert proc.returncode == 2 and str(tmp_path / "absent") in proc.stderr


def test_loss_benchmark_runs_and_reports_relative_numbers():
    proc = run_tool("benchmark_losses.py", "--shape", 2, 7, 16, 16, "--repeats", 2, "--threads", 1)
    out = proc.stdout
    for name in ("| CE", "| BLV + CE", "| GRW CE", "| BLV + GRW CE"):
        assert name in out
    assert "+0.0%" in out and "1.00x" in out  # CE relative to itself


TOOLS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "tools", "*.py")))


def _options_without_help(help_text):
    """Option lines of an argparse --help with no help text, on the line or the next."""
    lines = help_text.splitlines()
    bare = []
    for i, line in enumerate(lines):
        if re.match(r"^  -", line) and not re.search(r"\S  +\S", line.strip()):
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if not re.match(r"^ {8,}\S", following):
                bare.append(line.strip())
    return bare


@pytest.mark.parametrize("tool", TOOLS + ["install_detectron2.sh"])
def test_help_says_what_the_tool_does_with_an_example(tool):
    if tool.endswith(".sh"):
        proc = subprocess.run(["bash", os.path.join(REPO, "tools", tool), "--help"],
                              capture_output=True, text=True, timeout=60)
    else:
        proc = run_tool(tool, "--help", check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert re.search(rf"(python|bash) tools/{re.escape(tool)}", text), "no example command"
    if not tool.endswith(".sh"):
        description = text.split("\n\n", 2)[1]  # after the usage lines
        assert len(description.split()) >= 5, description
        assert not _options_without_help(text)


def test_training_benchmark_times_variants_in_order_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_tool("benchmark_training.py", "--config-file", "configs/synthetic/deeplab_v3_plus.yaml",
                    "--config-file", "configs/synthetic/blv_deeplab.yaml", "--size", 32, "--iters", 2,
                    "--json", out, "SOLVER.IMS_PER_BATCH", 2)
    results = json.loads(out.read_text())
    assert [r["name"] for r in results] == ["deeplab_v3_plus", "blv_deeplab"]
    assert results[0]["ratio"] == 1.0
    for r in results:
        assert r["median_s"] > 0 and r["ratio"] > 0 and r["peak_mem_mb"] > 0
        assert r["size"] == 32 and r["trainable_params"] == r["params"] > 0
        assert r["inference_flops"] > 0
    # BLV changes training only: the same network at inference
    assert results[0]["inference_flops"] == results[1]["inference_flops"]
    assert "GFLOPs (1 image)" in proc.stdout
    assert abs(results[1]["ratio"] - results[1]["median_s"] / results[0]["median_s"]) < 1e-12
    # BLV reads class counts and no CLASS_STATS file is given: the output says what it used.
    assert "blv_deeplab: class statistics: synthetic long-tailed profile of 19 classes" in proc.stdout
    assert "deeplab_v3_plus: class statistics" not in proc.stdout
    assert "| blv_deeplab" in proc.stdout and "round-robin" in proc.stdout


def test_training_benchmark_adds_the_backbone_forward_row(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_tool("benchmark_training.py", "--config-file", "configs/synthetic/mask_rcnn_baseline.yaml",
                    "--config-file", "configs/synthetic/mask_rcnn_disalign.yaml", "--backbone-forward",
                    "--size", 32, "--iters", 2, "--json", out)
    results = json.loads(out.read_text())
    assert [r["name"] for r in results] == ["mask_rcnn_baseline", "mask_rcnn_disalign",
                                            "mask_rcnn_baseline backbone forward"]
    stage1, stage2, backbone = results
    assert 0 < stage2["trainable_params"] < stage1["trainable_params"]
    assert backbone["trainable_params"] == 0 and 0 < backbone["params"] < stage1["params"]
    assert backbone["median_s"] > 0 and backbone["ratio"] == backbone["median_s"] / stage1["median_s"]
    assert "mask_rcnn_baseline backbone forward: mask_rcnn_baseline's backbone alone" in proc.stdout


def test_training_benchmark_names_a_bad_override():
    proc = run_tool("benchmark_training.py", "--config-file", "configs/synthetic/deeplab_v3_plus.yaml",
                    "MODEL.NO_SUCH_KEY", 1, check=False)
    assert proc.returncode == 2 and "MODEL.NO_SUCH_KEY" in proc.stderr


def test_plot_results_writes_every_figure_from_saved_results(trained_baseline, tmp_path):
    lvis = tmp_path / "lvis_run" / "inference" / "synthetic_lvis_val"
    lvis.mkdir(parents=True)
    (lvis / "lvis_results.json").write_text(json.dumps(
        {task: {"AP": 20.0, "APr": 5.0, "APc": 18.0, "APf": 28.0} for task in ("bbox", "segm")}))
    out = tmp_path / "figures"
    proc = run_tool("plot_results.py", trained_baseline, trained_baseline, tmp_path / "lvis_run",
                    "--names", "CE", "CE again", "LVIS", "--output", out)
    expected = ["per_class_vs_frequency.png", "groups.png", "confusion_CE.png", "confusion_CE_again.png",
                "lvis_ap_groups.png"]
    tables = ["confusion_CE.csv", "confusion_CE_again.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected + tables)
    for name in expected:
        assert f"wrote {out / name}" in proc.stdout
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 300


@pytest.mark.parametrize("num_classes", [19, 150])
def test_plot_results_averages_seeds_and_scales_to_many_classes(num_classes, tmp_path):
    """Two methods of two seeds each, evaluated by the project's evaluator at 19 and 150 classes:
    one figure per method (seeds share a name; names that sanitise alike get distinct files),
    the confused pairs named by class, the full matrix kept as CSV."""
    from evaluation.long_tail_results import write_results

    runs = []
    for method, offset in (("C E", 0), ("C_E", 10)):
        for seed in (1, 2):
            runs.append(tmp_path / f"{offset + seed}")
            write_results(str(runs[-1]), num_classes, seed=offset + seed)
    out = tmp_path / "figures"
    run_tool("plot_results.py", *runs, "--names", "C E", "C E", "C_E", "C_E", "--min-pixels", 1,
             "--output", out)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["per_class_vs_frequency.png", "groups.png", "confusion_C_E.png", "confusion_C_E.csv",
                            "confusion_C_E_2.png", "confusion_C_E_2.csv"])
    with open(out / "confusion_C_E.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == [f"class {c}" for c in range(num_classes)] + ["ignored / other"]
    # the counts of both seeds summed: every labelled pixel of the two runs is in the table
    labelled = sum(int(v) for row in rows[1:] for v in row[1:])
    assert labelled == sum(
        int(np.load(run / "inference" / f"long_tail_results_{num_classes}" / "sem_seg_confusion_matrix.npy")
            [:, :num_classes].sum()) for run in runs[:2])
    for name in ("per_class_vs_frequency.png", "confusion_C_E.png"):
        with Image.open(out / name) as image:  # readable at any class count: bounded size
            assert 600 < image.size[0] < 4000 and image.size[1] < 2000, image.size


def test_training_curves_overlay_runs_and_average_seeds(tmp_path):
    """metrics.json as Detectron2's JSONWriter writes it (periodic records, evaluations with the
    group metrics, a resumed iteration logged twice): one PNG; the mean of two seeds is drawn."""
    import importlib.util

    def write(run, seed):
        run.mkdir()
        lines = []
        for it in range(19, 200, 20):
            lines.append({"iteration": it, "total_loss": 3.0 / (1 + it / 50) + 0.1 * seed, "lr": 0.01 * (1 - it / 200)})
        lines.append({"iteration": 99, "total_loss": 1.5 + 0.1 * seed, "lr": 0.005})  # resumed: logged again
        for it in (99, 199):
            lines.append({"iteration": it, "sem_seg/mIoU": it / 4 + seed, "sem_seg/mIoU-head": it / 3,
                          "sem_seg/mIoU-body": it / 5, "sem_seg/mIoU-tail": it / 10 + seed})
        (run / "metrics.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    for seed in (1, 2):
        write(tmp_path / f"ce{seed}", seed)
    out = tmp_path / "figures" / "curves.png"
    proc = run_tool("plot_training_curves.py", tmp_path / "ce1", tmp_path / "ce2", "--names", "CE", "CE",
                    "--output", out)
    assert f"wrote {out}" in proc.stdout
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 1000
    spec = importlib.util.spec_from_file_location("curves", os.path.join(REPO, "tools", "plot_training_curves.py"))
    curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curves)
    runs = [curves.read_metrics(str(tmp_path / f"ce{seed}")) for seed in (1, 2)]
    its, mean, std = curves.mean_over_seeds(runs, "sem_seg/mIoU-tail")
    assert its.tolist() == [99, 199] and mean.tolist() == [99 / 10 + 1.5, 199 / 10 + 1.5]
    assert std == pytest.approx([np.std([1, 2], ddof=1)] * 2)
    its, mean, _ = curves.mean_over_seeds(runs, "total_loss")
    assert mean[its.tolist().index(99)] == pytest.approx(1.65)  # the record logged last wins
    bad = run_tool("plot_training_curves.py", tmp_path, "--output", out, check=False)
    assert bad.returncode == 2 and "holds no metrics.json" in bad.stderr


def test_model_zoo_cost_table_is_measured_and_kept(tmp_path):
    zoo = tmp_path / "MODEL_ZOO.md"
    zoo.write_text("# zoo\n\nsome text\n")
    for config in ("configs/synthetic/deeplab_v3_plus.yaml", "configs/synthetic/fcn.yaml"):
        run_tool("make_model_zoo_costs.py", config, "--size", 32, "--iters", 1, "--model-zoo", zoo)
    text = zoo.read_text()
    assert text.startswith("# zoo\n\nsome text\n") and text.count("## Cost of each config") == 1
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["synthetic/deeplab_v3_plus.yaml", "synthetic/fcn.yaml"]
    for r in rows:
        train_s, infer_s, memory = (float(v) for v in r.split("|")[2:5])
        assert train_s > 0 and infer_s > 0 and memory > 0
    assert "**CPU figures at a reduced size**" in text and "32x32" in text


def test_plot_results_names_a_run_without_results(tmp_path):
    proc = run_tool("plot_results.py", tmp_path, "--output", tmp_path / "figures", check=False)
    assert proc.returncode == 2 and f"error: {tmp_path} holds no inference" in proc.stderr
    assert not (tmp_path / "figures").exists()


def _seed_run(folder, seed, miou_tail, lr=0.01):
    """A run folder as training leaves it: config.yaml and the results file."""
    _results(folder / "inference/val_set/sem_seg_results.json", miou_tail)
    (folder / "config.yaml").write_text(
        f"SEED: {seed}\nOUTPUT_DIR: {folder}\nSOLVER:\n  BASE_LR: {lr}\nMODEL:\n  WEIGHTS: ''\n")


def test_compare_results_mean_and_std_over_seeds(tmp_path):
    for seed, tail in zip((1, 2, 3), (1.0, 2.0, 3.0)):
        _seed_run(tmp_path / f"ce-seed{seed}", seed, tail)
    for seed, tail in zip((1, 2, 3), (7.0, 8.0, 12.0)):
        _seed_run(tmp_path / f"blv-seed{seed}", seed, tail)
    _seed_run(tmp_path / "pat-seed1", 1, 2.5)
    runs = [tmp_path / f"{r}-seed{s}" for r in ("ce", "blv") for s in (1, 2, 3)] + [tmp_path / "pat-seed1"]
    proc = run_tool("compare_results.py", *runs, "--names", *["CE"] * 3, *["BLV"] * 3, "PAT")
    table, differences = proc.stdout.split("Difference to CE")
    rows = table.strip().splitlines()
    assert len(rows) == 5 and "seeds" in rows[0]
    ce, blv, pat = rows[2], rows[3], rows[4]
    assert ce.startswith("| CE ") and "| 3 " in ce and "2.00 ± 1.00" in ce
    assert "9.00 ± 2.65" in blv  # stdev(7, 8, 12) = 2.6458
    assert "| 1 " in pat and "2.50" in pat and "±" not in pat.split("|")[7]
    diff_rows = {line.split("|")[1].strip(): line for line in differences.splitlines() if line.startswith("| ")}
    assert "+7.00*" in diff_rows["BLV"]  # |9 - 2| > 1 + 2.65
    assert "+0.50" in diff_rows["PAT"] and "+0.50*" not in diff_rows["PAT"]  # one seed: no claim


def test_compare_results_difference_within_the_spread_is_not_marked(tmp_path):
    for seed, (a, b) in enumerate(((1.0, 2.0), (5.0, 4.0), (3.0, 6.0)), start=1):
        _seed_run(tmp_path / f"ce-seed{seed}", seed, a)
        _seed_run(tmp_path / f"blv-seed{seed}", seed, b)
    runs = [tmp_path / f"{r}-seed{s}" for r in ("ce", "blv") for s in (1, 2, 3)]
    proc = run_tool("compare_results.py", *runs, "--names", *["CE"] * 3, *["BLV"] * 3)
    blv = [line for line in proc.stdout.split("Difference to CE")[1].splitlines() if line.startswith("| BLV")][0]
    assert "+1.00" in blv and "*" not in blv  # means 3 and 4, stds 2 and 2


def test_compare_results_refuses_to_average_different_configs(tmp_path):
    _seed_run(tmp_path / "a", 1, 1.0)
    _seed_run(tmp_path / "b", 2, 2.0, lr=0.02)
    proc = run_tool("compare_results.py", tmp_path / "a", tmp_path / "b", "--names", "CE", "CE", check=False)
    assert proc.returncode == 2 and "SOLVER.BASE_LR" in proc.stderr and str(tmp_path / "b") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_compare_results_refuses_one_seed_counted_twice(tmp_path):
    _seed_run(tmp_path / "a", 4, 1.0)
    _seed_run(tmp_path / "b", 4, 2.0)
    proc = run_tool("compare_results.py", tmp_path / "a", tmp_path / "b", "--names", "CE", "CE", check=False)
    assert proc.returncode == 2 and "share SEED 4" in proc.stderr


@pytest.mark.parametrize("same_data", [True, False])
def test_compare_results_checks_the_seeds_counted_the_same_data(tmp_path, same_data):
    for seed, counts in ((1, [90, 9, 1]), (2, [90, 9, 1] if same_data else [80, 15, 5])):
        folder = tmp_path / f"ce-seed{seed}"
        _results(folder / "inference/val_set/sem_seg_results.json", 1.0)
        (folder / "class_stats.json").write_text(json.dumps({"counts": counts, "groups": {"head": [0]}}))
        (folder / "config.yaml").write_text(  # each run resolves its statistics into its own folder
            f"SEED: {seed}\nMODEL:\n  LONG_TAIL:\n    CLASS_STATS: {folder / 'class_stats.json'}\n")
    proc = run_tool("compare_results.py", tmp_path / "ce-seed1", tmp_path / "ce-seed2", "--names", "CE", "CE",
                    check=False)
    if same_data:
        assert proc.returncode == 0 and "| 2 " in proc.stdout
    else:
        assert proc.returncode == 2 and "trained on different data" in proc.stderr
