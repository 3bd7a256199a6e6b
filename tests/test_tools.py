"""Small command-line tools: the comparison table and the loss benchmark."""
import json

from conftest import run_tool


def _results(path, miou_tail):
    sem_seg = {"mIoU": 50.0, "mACC": 60.0, "pACC": 90.0, "mIoU-head": 90.0, "mIoU-body": 40.0,
               "mIoU-tail": miou_tail, "mACC-head": 95.0, "mACC-body": 50.0, "mACC-tail": None}
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"sem_seg": sem_seg}))


def test_compare_results_table(tmp_path):
    _results(tmp_path / "ce/inference/val_set/sem_seg_results.json", 1.5)
    _results(tmp_path / "blv/inference/val_set/sem_seg_results.json", 7.25)
    proc = run_tool("compare_results.py", tmp_path / "ce", tmp_path / "blv", "--names", "CE", "BLV")
    lines = proc.stdout.strip().splitlines()
    assert "mIoU-tail" in lines[0] and lines[2].startswith("| CE") and lines[3].startswith("| BLV")
    assert "7.25" in lines[3] and "1.50" in lines[2] and "n/a" in lines[3]


def test_compare_results_names_a_missing_run(tmp_path):
    proc = run_tool("compare_results.py", tmp_path / "absent", check=False)
    assert proc.returncode == 2 and str(tmp_path / "absent") in proc.stderr


def test_loss_benchmark_runs_and_reports_relative_numbers():
    proc = run_tool("benchmark_losses.py", "--shape", 2, 7, 16, 16, "--repeats", 2, "--threads", 1)
    out = proc.stdout
    for name in ("| CE", "| BLV + CE", "| GRW CE", "| BLV + GRW CE"):
        assert name in out
    assert "+0.0%" in out and "1.00x" in out  # CE relative to itself
