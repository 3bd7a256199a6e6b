"""tools/gpu_check.py (``make gpu-check``) in its CPU mode, tiny: it must run here so that it runs on
the GPU machine; its tables are PERFORMANCE.md's commands."""
import json
import os
import re
import shlex

from conftest import REPO, run_tool


def test_the_tables_are_performance_mds_commands():
    import sys

    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        import gpu_check
    finally:
        sys.path.remove(os.path.join(REPO, "tools"))
    with open(os.path.join(REPO, "PERFORMANCE.md")) as f:
        text = f.read().replace("\\\n", " ")
    documented = {tuple(shlex.split(m)) for m in re.findall(r"python (tools/benchmark_training\.py[^\n]*)", text)}
    checked = {tuple(["tools/" + tool] + args) for _, tool, args in gpu_check.TABLES if tool == "benchmark_training.py"}
    assert len(documented) >= 3 and documented <= checked, documented - checked
    assert gpu_check.table_command("benchmark_training.py", ["--size", "256", "--iters", "15"], 32, 1)[-4:] == \
        ["--size", "32", "--iters", "1"]
    assert gpu_check.table_command("benchmark_losses.py", ["--shape", "2", "150", "128", "128", "--repeats", "20"],
                                   32, 1)[-7:] == ["--shape", "2", "150", "32", "32", "--repeats", "1"]


def test_cpu_mode_trains_a_method_and_its_second_stage_and_says_what_it_skipped(tmp_path):
    output = tmp_path / "check.json"
    run_tool("gpu_check.py", "--output", output, "--work-dir", tmp_path / "work", "--tables",
             "--methods", "ce", "disalign", "--method-size", 64, "--method-iters", 5, "--workers", 0,
             timeout=900)
    report = json.loads(output.read_text())
    assert report["environment"]["cuda"] is False and report["failed"] == []
    runs = {(m["method"], m["amp"]): m for m in report["methods"]}
    assert set(runs) == {("ce", False), ("disalign", False), ("ce", True), ("disalign", True)}
    for method in ("ce", "disalign"):
        run = runs[(method, False)]
        assert run["returncode"] == 0 and run["losses_finite"] and run["last_iteration"] == 4, run
        assert run["s_per_iter"] > 0 and "sem_seg/mIoU" in run["evaluation"]
        assert "needs CUDA" in runs[(method, True)]["skipped"]
    assert "MODEL.WEIGHTS " + str(tmp_path / "work" / "runs" / "ce" / "model_final.pth") in runs[("disalign", False)]["command"]
    assert "needs 2 CUDA devices" in report["launch"]["skipped"]
