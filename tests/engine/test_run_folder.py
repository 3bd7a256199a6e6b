"""A run folder belongs to one run (longtailseg/engine/run_folder.py): no training overwrites
another's checkpoints, two never share a folder, a lost last_checkpoint resumes from the newest
checkpoint that loads, and --resume continues only the run's own config. Each case runs
tools/train_net.py as a user does and checks the exit code, the one error line and the files."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY_TRAINING, run_tool

CONFIG = "configs/synthetic/deeplab_v3_plus.yaml"
DISALIGN = "configs/synthetic/disalign_deeplab.yaml"
# Checkpoints at iterations 1 and 3, model_final.pth at 3.
RUN = ["SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 0]
LONGER = ["SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 0]


def _train(out, *opts, flags=(), config=CONFIG, datasets_root=None, check=False, num_gpus=1):
    return run_tool("train_net.py", "--config-file", config, "--num-gpus", num_gpus, "--dist-url", "auto",
                    *flags, *TINY_TRAINING, *opts, "OUTPUT_DIR", out, datasets_root=datasets_root, check=check)


def _one_line_error(proc, *expected):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for text in expected:
        assert str(text) in lines[0], lines[0]
    return lines[0]


def _files(folder):
    """{name: (mtime, sha256)} of the checkpoints and last_checkpoint, and config.yaml's sha256 (an
    evaluation puts it back as it was)."""
    return {p.name: (None if p.name == "config.yaml" else p.stat().st_mtime_ns,
                     hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())
            if p.is_file() and (p.suffix == ".pth" or p.name in ("last_checkpoint", "config.yaml"))}


def _iteration(path):
    return torch.load(path, map_location="cpu", weights_only=True)["iteration"]


def _log(proc):
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def finished(datasets_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    _train(out, *RUN, datasets_root=datasets_root, check=True)
    assert not (out / "run.lock").exists()
    return out


@pytest.fixture
def run(finished, tmp_path):
    """A copy of a finished run's folder (model_0000001.pth, model_0000003.pth, model_final.pth)."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


# 1. Without --resume ---------------------------------------------------------------------------

def test_training_again_into_a_run_folder_is_refused(run, datasets_root):
    before = _files(run)
    proc = _train(run, *RUN, datasets_root=datasets_root)
    _one_line_error(proc, f"OUTPUT_DIR {run} holds another run's checkpoints", "last_checkpoint",
                    "model_final.pth", "--resume", "new folder", "RUN.OVERWRITE True")
    assert _files(run) == before
    assert not (run / "run.lock").exists()


def test_overwrite_deletes_the_previous_run_and_starts_again(run, datasets_root):
    proc = _train(run, "SOLVER.MAX_ITER", 2, "RUN.OVERWRITE", "True", datasets_root=datasets_root, check=True)
    assert "RUN.OVERWRITE True: deleted the previous run's last_checkpoint, model_final.pth" in _log(proc)
    assert "Starting training from iteration 0" in _log(proc)
    assert sorted(p.name for p in run.glob("model_*.pth")) == ["model_final.pth"]  # 0000003 was the old run's
    assert _iteration(run / "model_final.pth") == 1
    assert (run / "last_checkpoint").read_text() == "model_final.pth"
    assert not (run / "run.lock").exists()


def test_evaluation_into_a_run_folder_keeps_its_checkpoints_and_config(run, datasets_root):
    before = _files(run)
    proc = _train(run, "MODEL.WEIGHTS", run / "model_0000001.pth", "TEST.UNIFORM.ENABLED", "True",
                  flags=["--eval-only"], datasets_root=datasets_root, check=True)
    assert "kept the training's" in _log(proc)
    assert _files(run) == before  # config.yaml too: a later --resume compares against it
    assert (run / "inference").is_dir() and not (run / "run.lock").exists()


# 2. --resume without a usable last_checkpoint -------------------------------------------------

def _damage(run, case):
    last = run / "last_checkpoint"
    if case == "deleted":
        last.unlink()
        (run / "model_final.pth").unlink()  # so the newest is found by the iteration in its name
    elif case == "empty":
        last.write_text("")
    elif case == "missing_file":
        last.write_text("model_0000009.pth")
    elif case == "folder":
        (run / "backup").mkdir()
        last.write_text("backup")
    elif case == "newest_truncated":
        last.unlink()
        for name in ("model_final.pth", "model_0000003.pth"):
            data = (run / name).read_bytes()
            (run / name).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case,resumed,start", [
    ("deleted", "model_0000003.pth", 4), ("empty", "model_final.pth", 4),
    ("missing_file", "model_final.pth", 4), ("folder", "model_final.pth", 4),
    ("newest_truncated", "model_0000001.pth", 2),
])
def test_resume_without_a_usable_last_checkpoint_takes_the_newest_that_loads(case, resumed, start, run,
                                                                             datasets_root):
    _damage(run, case)
    proc = _train(run, *LONGER, flags=["--resume"], datasets_root=datasets_root, check=True)
    log = _log(proc)
    assert f"resuming from {resumed}, the newest checkpoint in {run} that loads" in log
    assert f"Starting training from iteration {start}" in log
    assert _iteration(run / "model_final.pth") == 5
    if case == "newest_truncated":
        assert "skipped:" in log and "model_0000003.pth" in log
    assert not (run / "run.lock").exists()


def test_resume_with_no_checkpoint_that_loads_is_refused(run, datasets_root):
    _damage(run, "newest_truncated")
    data = (run / "model_0000001.pth").read_bytes()
    (run / "model_0000001.pth").write_bytes(data[:1000])
    (run / "last_checkpoint").write_text("")
    before = _files(run)
    proc = _train(run, *LONGER, flags=["--resume"], datasets_root=datasets_root)
    _one_line_error(proc, f"{run / 'last_checkpoint'} is empty", "no checkpoint in", "can be resumed from",
                    "model_0000001.pth")
    assert _files(run) == before and not (run / "run.lock").exists()


def test_a_folder_in_place_of_a_checkpoint_is_refused(run, datasets_root):
    """It would stop the run when that checkpoint is saved, hours later."""
    (run / "model_final.pth").unlink()
    (run / "model_final.pth").mkdir()
    before = _files(run)
    proc = _train(run, *LONGER, flags=["--resume"], datasets_root=datasets_root)
    _one_line_error(proc, f"{run / 'model_final.pth'} is a folder where training writes a checkpoint")
    assert _files(run) == before and not (run / "run.lock").exists()


# 3. One run per folder: the lock --------------------------------------------------------------

HOLD = ("import sys, time\n"
        "from longtailseg.engine.run_folder import RunLock\n"
        "RunLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n")


def _python(*args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                            **kwargs)


@pytest.fixture
def holder(run):
    """A live process holding the run folder's lock (through RunLock, as a training does)."""
    proc = _python("-c", HOLD, str(run))
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("num_gpus", [1, 2])
def test_a_folder_locked_by_a_live_run_is_refused_naming_its_pid(num_gpus, holder, run, datasets_root):
    before = _files(run)
    proc = _train(run, *LONGER, flags=["--resume"], num_gpus=num_gpus, datasets_root=datasets_root)
    _one_line_error(proc, f"OUTPUT_DIR {run} is in use by another training", f"PID {holder.pid} ",
                    run / "run.lock", "set OUTPUT_DIR to another folder")
    assert _files(run) == before
    assert (run / "run.lock").exists()  # still the holder's


def test_the_lock_of_a_killed_run_is_taken_over(holder, run, datasets_root):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run / "run.lock").exists()  # kill -9 left it behind
    proc = _train(run, *LONGER, flags=["--resume"], datasets_root=datasets_root, check=True)
    assert f"took over the lock {run / 'run.lock'} of PID {holder.pid}" in _log(proc)
    assert _iteration(run / "model_final.pth") == 5
    assert not (run / "run.lock").exists()


def test_a_lock_file_naming_a_live_process_is_refused_a_dead_one_taken_over(run, datasets_root, tmp_path):
    """A lock file without a held lock (a file system where locks do nothing): its PID and host
    decide."""
    sleeper = _python("-c", "import time; print('up', flush=True); time.sleep(120)")
    try:
        assert sleeper.stdout.readline().strip() == "up"
        host = os.uname().nodename
        (run / "run.lock").write_text(f'{{"pid": {sleeper.pid}, "host": "{host}", "started": "then"}}')
        proc = _train(run, *LONGER, flags=["--resume"], datasets_root=datasets_root)
        _one_line_error(proc, f"PID {sleeper.pid} on host {host}")
    finally:
        sleeper.kill()
        sleeper.wait()
    # another host's run: whether it lives cannot be told from here
    (run / "run.lock").write_text(f'{{"pid": {sleeper.pid}, "host": "elsewhere", "started": "then"}}')
    proc = _train(run, *LONGER, flags=["--resume"], datasets_root=datasets_root)
    _one_line_error(proc, f"PID {sleeper.pid} on host elsewhere", f"if it has ended delete {run / 'run.lock'}")
    (run / "run.lock").write_text(f'{{"pid": {sleeper.pid}, "host": "{host}", "started": "then"}}')
    proc = _train(run, *LONGER, flags=["--resume"], datasets_root=datasets_root, check=True)
    assert f"of PID {sleeper.pid} on {host}" in _log(proc)
    assert not (run / "run.lock").exists()


def test_two_trainings_started_into_one_folder(datasets_root, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", DETECTRON2_DATASETS=str(datasets_root))
    first = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", CONFIG,
         *TINY_TRAINING, "SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "100000",
         "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(out)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if (out / "run.lock").exists() and f'"pid": {first.pid},' in (out / "run.lock").read_text():
                break
            time.sleep(0.1)
        second = _train(out, "SOLVER.MAX_ITER", 2, datasets_root=datasets_root)
        assert first.poll() is None, "the first training ended before the second was refused"
        _one_line_error(second, f"PID {first.pid} ")
    finally:
        first.kill()
        first.wait()


def test_two_process_training_shares_its_launcher_lock(datasets_root, tmp_path):
    out = tmp_path / "run"
    _train(out, "SOLVER.MAX_ITER", 2, num_gpus=2, datasets_root=datasets_root, check=True)
    assert (out / "model_final.pth").is_file() and not (out / "run.lock").exists()


# 4. A second stage never writes into its stage 1's folder -------------------------------------

def test_stage2_into_the_folder_of_its_weights_is_refused(run, datasets_root):
    before = _files(run)
    proc = _train(run, "SOLVER.MAX_ITER", 2, "MODEL.WEIGHTS", run / "model_final.pth", config=DISALIGN,
                  datasets_root=datasets_root)
    _one_line_error(proc, f"into OUTPUT_DIR {run}", f"MODEL.WEIGHTS {run / 'model_final.pth'}",
                    "set OUTPUT_DIR to a new folder")
    assert _files(run) == before and not (run / "run.lock").exists()


# 5. --eval-only --resume with MODEL.WEIGHTS ----------------------------------------------------

def test_eval_only_resume_with_other_weights_is_refused(run, datasets_root):
    before = _files(run)
    proc = _train(run, "MODEL.WEIGHTS", run / "model_0000001.pth", flags=["--eval-only", "--resume"],
                  datasets_root=datasets_root)
    _one_line_error(proc, "evaluates model_final.pth", "MODEL.WEIGHTS", "model_0000001.pth", "drop --resume")
    assert _files(run) == before


# 6. --resume continues the run's own config ---------------------------------------------------

def test_resume_with_another_loss_is_refused_and_the_runs_config_resumes(run, datasets_root):
    before = _files(run)
    proc = _train(run, *LONGER, "MODEL.LONG_TAIL.LOSS.NAME", "LDAM", flags=["--resume"],
                  datasets_root=datasets_root)
    _one_line_error(proc, run / "config.yaml", "MODEL.LONG_TAIL.LOSS.NAME: 'CE' there, 'LDAM' here",
                    f"--config-file {run / 'config.yaml'} OUTPUT_DIR {run}", "SOLVER.MAX_ITER")
    assert _files(run) == before and not (run / "run.lock").exists()
    # the fix the line names: the run's own config.yaml, with a longer schedule
    proc = run_tool("train_net.py", "--config-file", run / "config.yaml", "--resume", *LONGER, "OUTPUT_DIR", run,
                    datasets_root=datasets_root, check=True)
    assert "Starting training from iteration 4" in _log(proc)
    assert _iteration(run / "model_final.pth") == 5
