"""tools/compare_lvis_results.py: the LVIS table with per-iteration time and overhead."""
import json

from conftest import run_tool


def _run(folder, ap_r, times, from_metrics=False):
    folder.mkdir(parents=True)
    results = {task: {"AP": 20.0, "APr": ap_r, "APc": 15.5, "APf": -100.0} for task in ("bbox", "segm")}
    records = [{"iteration": 19 + 20 * i, "time": t} for i, t in enumerate(times)]
    if from_metrics:
        records[-1].update({f"{task}/{k}": v for task, r in results.items() for k, v in r.items()})
    else:
        (folder / "inference/val_set").mkdir(parents=True)
        (folder / "inference/val_set/lvis_results.json").write_text(json.dumps(results))
    (folder / "metrics.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_table_with_groups_time_and_overhead(tmp_path):
    _run(tmp_path / "base", 1.25, [9.0, 1.0, 1.0])  # the first record (warm-up) is left out
    _run(tmp_path / "blv", 7.5, [9.0, 1.1, 1.3], from_metrics=True)
    proc = run_tool("compare_lvis_results.py", tmp_path / "base", tmp_path / "blv", "--names", "baseline", "BLV")
    lines = proc.stdout.strip().splitlines()
    assert "segm APr" in lines[0] and "bbox APf" in lines[0] and "s/iter" in lines[0]
    assert lines[2].startswith("| baseline") and "1.25" in lines[2] and "1.000" in lines[2]
    assert "7.50" in lines[3] and "1.200" in lines[3] and "+20.0%" in lines[3]
    assert "n/a" in lines[3]  # APf = -100: no f categories to evaluate
    assert lines[3].rstrip(" |").endswith("72")  # 1.2 s x 60 iterations


def test_missing_run_is_named(tmp_path):
    proc = run_tool("compare_lvis_results.py", tmp_path / "absent", check=False)
    assert proc.returncode == 2 and str(tmp_path / "absent") in proc.stderr


def test_seeds_of_one_row_are_averaged(tmp_path):
    for seed, ap_r, time in ((1, 1.0, 1.0), (2, 3.0, 2.0)):
        _run(tmp_path / f"base{seed}", ap_r, [9.0, time])
        (tmp_path / f"base{seed}/config.yaml").write_text(f"SEED: {seed}\nOUTPUT_DIR: base{seed}\n")
    for seed, ap_r in ((1, 20.0), (2, 22.0)):
        _run(tmp_path / f"cos{seed}", ap_r, [9.0, 3.0])
    runs = [tmp_path / f"{r}{s}" for r in ("base", "cos") for s in (1, 2)]
    proc = run_tool("compare_lvis_results.py", *runs, "--names", "baseline", "baseline", "cosine", "cosine")
    table, differences = proc.stdout.split("Difference to baseline")
    base, cosine = table.strip().splitlines()[2:4]
    assert "2.00 ± 1.41" in base and "1.500" in base and "| 2 " in base  # APr and s/iter over seeds
    assert "21.00 ± 1.41" in cosine and "+100.0%" in cosine
    assert "+19.00*" in differences and "n/a" in differences  # APf: nothing to evaluate
