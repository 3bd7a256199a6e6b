"""--resume after a kill -9 at a periodic checkpoint ends with the uninterrupted run's weights, bit for
bit, for every model family, including those that draw random numbers while training (dropout,
proposal and mask sampling, BLV's noise): each draw of iteration i on process r is a function of
(SEED, r, i) (RandomStateHook) and each training sample of (SEED, position) (data/resumable.py),
and the loader's iterator, made at its first next(), draws nothing from torch's RNG.

With several processes the same holds: no process's RNG state needs saving, so a checkpoint of
the main process alone resumes every process exactly (tested with 2 CPU processes).

Each case trains 6 iterations with a checkpoint every 3. The kill cases start tools/train_net.py,
SIGKILL its process group as soon as last_checkpoint names model_0000002.pth, and resume; the
others resume from the uninterrupted run's own model_0000002.pth copied alone into a fresh folder
(what such a kill leaves, without the cost of a third run)."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY_TRAINING, run_tool

SCHEDULE = ["SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 3, "TEST.EVAL_PERIOD", 0]
DROPOUT = ["MODEL.SEM_SEG_HEAD.ASPP_DROPOUT", 0.1]
CHECKPOINT = "model_0000002.pth"  # written after iteration 3 (iterations count from 0)


def _args(config, out, opts, num_gpus=1, resume=False):
    return ["--config-file", f"configs/synthetic/{config}.yaml", "--num-gpus", num_gpus, "--dist-url", "auto",
            *(["--resume"] if resume else []), *TINY_TRAINING, *SCHEDULE, *opts, "OUTPUT_DIR", out]


def _train(config, out, opts, datasets_root, num_gpus=1, resume=False):  # TINY_TRAINING: 0 loader workers
    return run_tool("train_net.py", *_args(config, out, opts, num_gpus, resume), datasets_root=datasets_root)


def _kill_after_checkpoint(config, out, opts, datasets_root, num_gpus=1):
    """Train, and SIGKILL every process of the run (loader workers, other ranks) once
    last_checkpoint names the checkpoint of iteration 3."""
    out.mkdir(parents=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", DETECTRON2_DATASETS=str(datasets_root))
    with open(out.parent / f"{out.name}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "train_net.py"),
                                 *map(str, _args(config, out, opts, num_gpus))],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                marker = out / "last_checkpoint"
                if marker.is_file() and marker.read_text().strip() == CHECKPOINT:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.005)
        finally:
            if proc.poll() is None and time.monotonic() >= deadline:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (out.parent / f"{out.name}.log").read_text()[-3000:]
    assert not (out / "model_final.pth").exists() and (out / "last_checkpoint").read_text().strip() == CHECKPOINT


def _copy_checkpoint(full, out):
    out.mkdir()
    shutil.copy(full / CHECKPOINT, out)
    (out / "last_checkpoint").write_text(CHECKPOINT)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_identical(full, resumed):
    uninterrupted, after_resume = _weights(full / "model_final.pth"), _weights(resumed / "model_final.pth")
    assert uninterrupted.keys() == after_resume.keys()
    differ = [k for k in uninterrupted if not torch.equal(uninterrupted[k], after_resume[k])]
    assert not differ, f"{len(differ)} of {len(uninterrupted)} tensors differ, e.g. {differ[:3]}"
    # the iterations after the checkpoint moved the weights: the comparison is not vacuous
    at_checkpoint = _weights(full / CHECKPOINT)
    assert not all(torch.equal(at_checkpoint[k], after_resume[k]) for k in after_resume)


# Stage-1 weights for the second stages, once per session (2 iterations).

@pytest.fixture(scope="session")
def stage1(datasets_root, tmp_path_factory):
    made = {}

    def weights(config):
        if config not in made:
            out = tmp_path_factory.mktemp(config)
            run_tool("train_net.py", "--config-file", f"configs/synthetic/{config}.yaml", *TINY_TRAINING,
                     "SOLVER.MAX_ITER", 2, "TEST.EVAL_PERIOD", 0, "OUTPUT_DIR", out, datasets_root=datasets_root)
            made[config] = out / "model_final.pth"
        return made[config]

    return weights


@pytest.mark.parametrize("config, opts", [
    ("deeplab_v3_plus", DROPOUT + ["TEST.EVAL_PERIOD", 3]),  # evaluation at iteration 3 in the uninterrupted run only
    ("mask_rcnn_baseline_rfs", []),  # the repeat-factor sampler's state too
], ids=["deeplab-dropout", "mask-rcnn-rfs"])
def test_resume_after_kill_is_bit_identical_with_0_and_2_loader_workers(config, opts, datasets_root, tmp_path):
    """One uninterrupted run for both: the loader workers do not change what is trained."""
    _train(config, tmp_path / "full", opts, datasets_root)
    for workers in (0, 2):
        killed = tmp_path / f"killed-{workers}-workers"
        _kill_after_checkpoint(config, killed, [*opts, "DATALOADER.NUM_WORKERS", workers], datasets_root)
        _train(config, killed, [*opts, "DATALOADER.NUM_WORKERS", workers], datasets_root, resume=True)
        _assert_identical(tmp_path / "full", killed)


@pytest.mark.parametrize("config, opts, stage1_config", [
    # SEED -1: the run's drawn seed must come back from the checkpoint, or data and draws change
    ("blv_deeplab", ["SEED", -1], None),
    ("medoe_deeplab", [], None),
    ("medoe_deeplab_moe", [], "medoe_deeplab"),
    ("disalign_deeplab", [], "deeplab_v3_plus"),
    ("mask_rcnn_cosine", [], None),
    ("mask_rcnn_blv", [], None),
    ("mask_rcnn_disalign", [], "mask_rcnn_baseline"),
])
def test_resume_from_a_periodic_checkpoint_is_bit_identical(config, opts, stage1_config, stage1, datasets_root,
                                                            tmp_path):
    if stage1_config:
        opts = [*opts, "MODEL.WEIGHTS", stage1(stage1_config)]
    _train(config, tmp_path / "full", opts, datasets_root)
    _copy_checkpoint(tmp_path / "full", tmp_path / "cut")
    _train(config, tmp_path / "cut", opts, datasets_root, resume=True)
    _assert_identical(tmp_path / "full", tmp_path / "cut")


def test_two_process_resume_after_kill_is_bit_identical(datasets_root, tmp_path):
    """Dropout on 2 CPU processes: the checkpoint is the main process's alone, and process 1
    still draws on resume what it drew in the uninterrupted run."""
    _train("deeplab_v3_plus", tmp_path / "full", DROPOUT, datasets_root, num_gpus=2)
    _kill_after_checkpoint("deeplab_v3_plus", tmp_path / "killed", DROPOUT, datasets_root, num_gpus=2)
    _train("deeplab_v3_plus", tmp_path / "killed", DROPOUT, datasets_root, num_gpus=2, resume=True)
    _assert_identical(tmp_path / "full", tmp_path / "killed")
