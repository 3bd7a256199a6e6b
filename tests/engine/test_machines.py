"""Several machines, as several launchers on this host (``--num-machines 2 --machine-rank R
--dist-url tcp://127.0.0.1:PORT``): Detectron2's ranks and local process groups, the same result as
the same number of processes on one machine, and one error line on every machine."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from conftest import REPO, TINY_TRAINING

CONFIG = "configs/synthetic/deeplab_v3_plus.yaml"
HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port_pair():
    """A port PORT with PORT + 1 free too (the processes' and the launchers' ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports")


def _env(datasets_root):
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", DETECTRON2_DATASETS=str(datasets_root))


def _machines(argv_of, num_machines=2, env_of=None, timeout=500):
    """Start one launcher per machine (``argv_of(rank)``), wait for all; (returncode, stdout,
    stderr) by machine rank. Output goes to files, so that a launcher that does not end can be
    shown with the others'."""
    procs, files = [], []
    for rank in range(num_machines):
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        files.append((out, err))
        procs.append(subprocess.Popen([sys.executable, *map(str, argv_of(rank))], cwd=REPO, env=env_of(rank),
                                      stdout=out, stderr=err, text=True))
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:  # the launchers and, through their death signal, their processes
            if p.poll() is None:
                p.kill()
                p.wait()
        raise AssertionError(f"launchers still running after {timeout} s:\n" + "\n".join(
            f"machine {r} ({p.returncode}):\n{_read(o)[-2000:]}\n{_read(e)[-2000:]}"
            for r, (p, (o, e)) in enumerate(zip(procs, files))))
    return [(p.returncode, _read(o), _read(e)) for p, (o, e) in zip(procs, files)]


def _read(file):
    file.seek(0)
    return file.read()


def _train_net(*args):
    return [os.path.join(REPO, "tools", "train_net.py"), "--config-file", CONFIG, *map(str, args)]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _results(output_dir):
    with open(output_dir / "inference" / "synthetic_ade_sem_seg_val" / "sem_seg_results.json") as f:
        return json.load(f)["sem_seg"]


def test_two_machines_of_two_processes_get_detectron2s_ranks_and_local_groups(datasets_root, tmp_path):
    url = f"tcp://127.0.0.1:{_free_port_pair()}"
    results = _machines(lambda r: [os.path.join(HERE, "machines_probe.py"), tmp_path, 2, 2, r, url],
                        env_of=lambda r: dict(_env(datasets_root), PYTHONPATH=os.pathsep.join(
                            [HERE, os.environ.get("PYTHONPATH", "")])))
    for code, out, err in results:
        assert code == 0, err[-3000:]
    records = {r["rank"]: r for r in (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(4))}
    # machine m holds global ranks 2m and 2m + 1, its local group exactly those (sum 4m + 1)
    for rank, record in records.items():
        machine = rank // 2
        assert record == {"rank": rank, "world_size": 4, "local_rank": rank % 2, "local_size": 2,
                          "local_rank_sum": 4 * machine + 1, "main": rank == 0}


def test_two_machines_train_and_evaluate_as_two_processes_of_one(datasets_root, tmp_path):
    opts = [*TINY_TRAINING, "SOLVER.MAX_ITER", 2, "SEED", 5]
    one = subprocess.run([sys.executable, *_train_net("--num-gpus", 2, "--dist-url", "auto", *opts,
                                                       "OUTPUT_DIR", tmp_path / "one")],
                         cwd=REPO, env=_env(datasets_root), capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    url = f"tcp://127.0.0.1:{_free_port_pair()}"
    two = _machines(lambda r: _train_net("--num-gpus", 1, "--num-machines", 2, "--machine-rank", r,
                                         "--dist-url", url, *opts, "OUTPUT_DIR", tmp_path / "two"),
                    env_of=lambda r: _env(datasets_root))
    for code, out, err in two:
        assert code == 0, err[-3000:]
    assert "World size: 2" in two[0][1] + two[0][2]
    single, multi = _weights(tmp_path / "one" / "model_final.pth"), _weights(tmp_path / "two" / "model_final.pth")
    assert single.keys() == multi.keys()
    assert all(torch.equal(single[k], multi[k]) for k in single)
    assert _results(tmp_path / "one") == _results(tmp_path / "two")


def _error_lines(results):
    lines = []
    for code, out, err in results:
        assert code == 2, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        errors = [line for line in err.strip().splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err[-3000:]
        lines.append(errors[0])
    return lines


def test_a_config_error_on_one_machine_ends_every_machine_with_its_line(datasets_root, tmp_path):
    url = f"tcp://127.0.0.1:{_free_port_pair()}"
    results = _machines(lambda r: _train_net("--num-gpus", 1, "--num-machines", 2, "--machine-rank", r,
                                             "--dist-url", url, *TINY_TRAINING, "OUTPUT_DIR", tmp_path,
                                             *(["MODEL.NO_SUCH_KEY", 1] if r == 1 else [])),
                        env_of=lambda r: _env(datasets_root))
    first, second = _error_lines(results)
    assert first == second and "MODEL.NO_SUCH_KEY" in first and "machine 1 of 2" in first
    assert not list(tmp_path.glob("model_*.pth"))


def test_a_bad_label_on_one_machine_ends_every_machine_with_its_line(trained_baseline, datasets_root, tmp_path):
    """Machine 1 reads a copy of the data whose training labels are broken (class statistics are
    given, so its process meets them in its first batch); machine 0's process only loses its peer."""
    import shutil

    import numpy as np
    from PIL import Image

    broken = tmp_path / "datasets"
    shutil.copytree(datasets_root, broken)
    folder = broken / "synthetic/ADEChallengeData2016/annotations_detectron2/training"
    for label_file in folder.glob("*.png"):
        label = np.array(Image.open(label_file))
        label[0, 0] = 42
        Image.fromarray(label).save(label_file)
    url = f"tcp://127.0.0.1:{_free_port_pair()}"
    results = _machines(
        lambda r: _train_net("--num-gpus", 1, "--num-machines", 2, "--machine-rank", r, "--dist-url", url,
                             *TINY_TRAINING, "SOLVER.MAX_ITER", 3, "MODEL.LONG_TAIL.CLASS_STATS",
                             trained_baseline / "class_stats.json", "OUTPUT_DIR", tmp_path / "out"),
        env_of=lambda r: _env(broken if r == 1 else datasets_root))
    first, second = _error_lines(results)
    assert first == second and "42" in first and str(folder) in first and "machine 1 of 2" in first


def test_auto_dist_url_is_refused_on_several_machines(tmp_path):
    proc = subprocess.run([sys.executable, *_train_net("--num-gpus", 1, "--num-machines", 2, "--dist-url", "auto",
                                                       "OUTPUT_DIR", tmp_path)],
                          cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    (line,) = _error_lines([(proc.returncode, proc.stdout, proc.stderr)])
    assert "--dist-url" in line and "tcp://HOST:PORT" in line
