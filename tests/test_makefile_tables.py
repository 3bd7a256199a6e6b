"""The Makefile's results targets: every table trains each method once per seed, a stage 2 starts
from the stage-1 run of its own seed, and the comparison tools get every seed under one name."""
import re
import subprocess

import pytest

from conftest import REPO

TARGETS = ("demo-methods", "results-losses", "results-medoe", "results-lvis", "results-ade20k-profile",
           "results-lvis-profile", "results-pat")


def dry_run(target, *variables):
    """The shell commands `make` would run for a target (nothing is executed)."""
    proc = subprocess.run(["make", "-n", "-s", target, "PY=python", "SEEDS=4 7", *variables], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout.replace("\\\n", " ")  # one line per command


@pytest.mark.parametrize("target", TARGETS)
def test_results_target_is_valid_shell_with_every_seed(target):
    script = dry_run(target)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # a syntax error fails here
    produced = set(re.findall(r"OUTPUT_DIR (\S+)-seed\$seed", script))
    assert "for seed in 4 7;" in script
    compare = [line for line in script.splitlines() if "compare_" in line][-1]
    runs = [arg for arg in compare.split("--names")[0].split() if "-seed" in arg]
    rows = {re.sub(r"-seed\d+$", "", run) for run in runs}
    assert rows and rows <= produced  # every folder compared is one the target trains or evaluates
    assert sorted(runs) == sorted(f"{row}-seed{seed}" for row in rows for seed in (4, 7))
    names = compare.split("--names")[1].split()
    assert len(names) == len(runs) and len(set(names)) == len(rows)
    for name, run, next_run in zip(names[::2], runs[::2], runs[1::2]):  # seeds 4 and 7 share a row name
        assert names[runs.index(next_run)] == name and run.endswith("-seed4") and next_run.endswith("-seed7")


@pytest.mark.parametrize("target", TARGETS)
def test_stage2_starts_from_the_stage1_run_of_its_seed(target):
    script = dry_run(target)
    for line in script.splitlines():
        if "MODEL.WEIGHTS" in line and "OUTPUT_DIR" in line:
            assert re.search(r"MODEL\.WEIGHTS \S+-seed\$seed/model_final\.pth", line), line


def test_stage1_schedule_can_be_shortened():
    assert "SOLVER.MAX_ITER" not in dry_run("demo-methods")
    script = dry_run("demo-methods", "STAGE1_ITERS=500")
    stage1 = [line for line in script.splitlines() if "deeplab_v3_plus-seed$seed " in line]
    stage2 = [line for line in script.splitlines() if "disalign_deeplab-seed$seed" in line]
    assert stage1 and all("SOLVER.MAX_ITER 500" in line for line in stage1)
    assert stage2 and not any("SOLVER.MAX_ITER" in line for line in stage2)
