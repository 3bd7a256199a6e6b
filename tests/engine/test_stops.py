"""Stops that lose little: Ctrl-C / SIGTERM write a checkpoint of the current iteration and say in one
line how to resume; a process killed by the system is named in one line; two multi-process runs
at once get their own ports; temporary files of killed runs go at the next start; writes are
fsync'ed. Each case runs tools/train_net.py as a user does and sends signals only to the processes
it started."""
import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY_TRAINING, run_tool

CONFIG = "configs/synthetic/deeplab_v3_plus.yaml"
TOOL = os.path.join(REPO, "tools", "train_net.py")
LONG = ["SOLVER.MAX_ITER", 100000, "TEST.EVAL_PERIOD", 0]  # still training when signalled


_STARTED = []


@pytest.fixture(autouse=True)
def _no_run_left_behind():
    """A failed test must not leave a 100000-iteration run behind: kill what it started."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                for pid in _children(proc.pid):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()


def _start(out, *opts, num_gpus=1, datasets_root):
    """tools/train_net.py in the background (default --dist-url); output in files beside OUTPUT_DIR."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", DETECTRON2_DATASETS=str(datasets_root))
    args = [TOOL, "--config-file", CONFIG, "--num-gpus", str(num_gpus), *TINY_TRAINING,
            *map(str, opts), "OUTPUT_DIR", str(out)]
    stdout, stderr = open(f"{out}.out", "w"), open(f"{out}.err", "w")
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=stdout, stderr=stderr)
    proc.out, proc.err = f"{out}.out", f"{out}.err"
    _STARTED.append(proc)
    return proc


def _wait_for_training(proc, timeout=120):
    """Until Detectron2 logged its first metrics ("iter: 19"): mid-training, checkpoints ahead."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before training:\n{_read(proc.err)[-3000:]}")
        if "iter: " in _read(proc.out):
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no iteration logged in time")


def _finish(proc, timeout=120):
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, _read(proc.out), _read(proc.err)


def _read(path):
    with open(path) as f:
        return f.read()


def _children(pid):
    """PIDs of the direct children of ``pid`` (the launcher's worker processes), oldest first."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    workers = [c for c in children if "resource_tracker" not in _cmdline(c)]
    return sorted(workers)


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _last_line(stderr):
    return stderr.strip().splitlines()[-1]


def _check_stopped(proc, out, signum):
    """Exit 128 + signal, one last line naming the checkpoint and --resume, no traceback; returns
    the iteration the checkpoint holds."""
    code, stdout, stderr = _finish(proc)
    assert code == 128 + signum, stdout[-2000:] + stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    line = _last_line(stderr)
    name = (out / "last_checkpoint").read_text()
    assert line.startswith(f"stopped by {signal.Signals(signum).name} after iteration "), line
    assert name in line and "resume with: python " in line and " --resume " in line, line
    assert line.count("stopped by") == 1 and f"OUTPUT_DIR {out}" in line, line
    iteration = torch.load(out / name, map_location="cpu", weights_only=True)["iteration"]
    assert iteration >= 19 and name == f"model_{iteration:07d}.pth", (iteration, name)
    assert not list(out.glob(".*.tmp"))
    return iteration


def _resume(out, iteration, datasets_root, leftovers=()):
    """--resume (on one process) to two iterations past the stop: it must load the checkpoint and
    finish."""
    for name in leftovers:  # what a run killed mid-write leaves
        (out / name).write_bytes(b"partial")
    done = run_tool("train_net.py", "--config-file", CONFIG, "--resume", *TINY_TRAINING, *LONG,
                    "SOLVER.MAX_ITER", iteration + 3, "OUTPUT_DIR", out, datasets_root=datasets_root)
    assert f"Starting training from iteration {iteration + 1}" in done.stdout + done.stderr
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == iteration + 2
    return done


def test_sigint_writes_a_checkpoint_and_resume_finishes(datasets_root, tmp_path):
    out = tmp_path / "out"
    proc = _start(out, *LONG, datasets_root=datasets_root)
    _wait_for_training(proc)
    proc.send_signal(signal.SIGINT)
    iteration = _check_stopped(proc, out, signal.SIGINT)
    # Leftovers of killed writers are removed when the next run starts in the folder, and logged.
    leftovers = [".model_0000099.pth.a1b2c3d4.tmp", ".last_checkpoint.zz_9yx8w.tmp"]
    done = _resume(out, iteration, datasets_root, leftovers)
    assert not any((out / name).exists() for name in leftovers)
    assert "removed 2 temporary files" in done.stdout + done.stderr


def test_sigterm_to_the_launcher_alone_stops_every_process(datasets_root, tmp_path):
    """As a job scheduler or ``kill PID`` does: only the launcher gets the signal; it forwards the
    stop, the processes agree on the iteration and the main one writes the checkpoint."""
    out = tmp_path / "out"
    proc = _start(out, *LONG, num_gpus=2, datasets_root=datasets_root)
    _wait_for_training(proc)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(proc.pid, signal.SIGTERM)
    iteration = _check_stopped(proc, out, signal.SIGTERM)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)  # none left running
    _resume(out, iteration, datasets_root)


def test_a_process_killed_by_the_system_is_named_in_one_line(datasets_root, tmp_path):
    out = tmp_path / "out"
    proc = _start(out, *LONG, num_gpus=2, datasets_root=datasets_root)
    _wait_for_training(proc)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)  # as the OOM killer does; workers start in rank order
    code, stdout, stderr = _finish(proc)
    assert code == 2, stdout[-2000:] + stderr[-3000:]
    assert "Traceback" not in stderr and "ProcessExitedException" not in stderr, stderr[-3000:]
    line = _last_line(stderr)
    assert line.startswith("error: process 1 of 2 was killed by SIGKILL (the system's OOM killer"), line
    assert "--resume" in line
    assert [ln for ln in stderr.splitlines() if ln.startswith("error:")] == [line]
    assert not os.path.exists(f"/proc/{workers[0]}")  # the other one was stopped


def test_two_multi_process_runs_at_once_get_their_own_ports(datasets_root, tmp_path):
    """The default --dist-url was one port per user: the second run died with EADDRINUSE."""
    runs = [_start(tmp_path / f"run{i}", "SOLVER.MAX_ITER", 1, "DATASETS.TEST", "()", num_gpus=2,
                   datasets_root=datasets_root) for i in range(2)]
    for i, proc in enumerate(runs):
        code, stdout, stderr = _finish(proc, timeout=240)
        assert code == 0, stdout[-2000:] + stderr[-3000:]
        assert (tmp_path / f"run{i}" / "model_final.pth").is_file()


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    """fsync's effect shows only after a machine crash, so its calls are counted: the file's data
    before the rename, then the folder that holds the new name."""
    from longtailseg import io

    synced = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: synced.append("rename") or real_replace(a, b))
    io.write_text_atomically("x", str(tmp_path / "a.txt"))
    assert len(synced) == 3 and synced[1:] == ["rename", str(tmp_path)], synced
    assert os.path.basename(synced[0]).startswith(".a.txt.") and synced[0].endswith(".tmp")
    assert (tmp_path / "a.txt").read_text() == "x" and os.listdir(tmp_path) == ["a.txt"]


def test_label_pools_close_under_the_stop_handlers(datasets_root):
    """The pre-flight's and the class count's process pools close while the trainer's stop
    handlers are installed: Pool.terminate() stops idle workers with SIGTERM, which a forked worker
    would otherwise leave to the training process (it hung the run before the pools reset it)."""
    script = (
        "import longtailseg\n"
        "from longtailseg.data import get_dataset_dicts_checked, register_synthetic_datasets\n"
        "from longtailseg.data.class_counting import count_sem_seg\n"
        "from longtailseg.data.preflight import check_sem_seg_labels\n"
        "from longtailseg.engine.stops import handling_stops\n"
        f"register_synthetic_datasets({str(datasets_root / 'synthetic')!r})\n"
        "dicts = get_dataset_dicts_checked('synthetic_ade_sem_seg_train')\n"
        "with handling_stops():\n"
        "    for _ in range(15):\n"
        "        check_sem_seg_labels(dicts, 19, 255, num_workers=2)\n"
        "        count_sem_seg('synthetic_ade_sem_seg_train', 0.01, 0.001, num_workers=2, progress=False)\n"
        "print('closed')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("closed"), proc.stderr[-2000:]
