"""tools/submit_slurm.py: the sbatch script it writes, the node's train_net command from SLURM's
environment, and a job preempted mid-run under submitit's local executor that requeues itself with
--resume and ends with the weights of the uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY_TRAINING, run_tool

CONFIG = "configs/synthetic/deeplab_v3_plus.yaml"
TOOL = os.path.join(REPO, "tools", "submit_slurm.py")


def test_dry_run_prints_the_sbatch_script_of_the_options(tmp_path):
    proc = run_tool("submit_slurm.py", "--config-file", CONFIG, "--nodes", 2, "--gpus-per-node", 8,
                    "--partition", "learn", "--time", 600, "--constraint", "volta32gb", "--mail-user",
                    "me@lab.org", "--account", "vision", "--qos", "high", "--job-name", "r50", "--dry-run",
                    "OUTPUT_DIR", tmp_path)
    for line in ["--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=1", "--partition=learn", "--time=600",
                 "--constraint=volta32gb", "--mail-user=me@lab.org", "--mail-type=ALL", "--account=vision",
                 "--qos=high", "--job-name=r50", "--signal=TERM@120"]:
        assert f"#SBATCH {line}\n" in proc.stdout, line
    assert "export SUBMITIT_PREEMPT_SIGNAL=TERM" in proc.stdout  # the job's submitit waits for SIGTERM
    assert "--num-machines 2 --machine-rank 0 --dist-url tcp://FIRST_NODE:" in proc.stdout
    assert not (tmp_path / "submitit").exists()  # nothing submitted


def test_bad_input_is_refused_before_anything_is_submitted(tmp_path):
    proc = run_tool("submit_slurm.py", "--config-file", CONFIG, "--cluster", "local", "MODEL.NO_SUCH_KEY", 1,
                    "OUTPUT_DIR", tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().startswith("error:") and "MODEL.NO_SUCH_KEY" in proc.stderr
    proc = run_tool("submit_slurm.py", "--config-file", CONFIG, "--cluster", "local", "--nodes", 2,
                    "OUTPUT_DIR", tmp_path, check=False)
    assert proc.returncode == 2 and "--nodes 2 needs --cluster slurm" in proc.stderr
    assert not (tmp_path / "submitit").exists()


def test_each_node_runs_train_net_with_its_rank_from_slurms_environment(monkeypatch):
    """submitit's own JobEnvironment reads SLURM's variables (node list, node id, job id)."""
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        import submit_slurm
    finally:
        sys.path.remove(os.path.join(REPO, "tools"))
    import submitit

    job = submit_slurm.TrainJob(["--config-file", "c.yaml", "SEED", "1"], gpus_per_node=8)
    argvs = []
    for node in (0, 1):
        for key, value in dict(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu[07-08]",
                               SLURM_JOB_NUM_NODES="2", SLURM_NODEID=str(node), SLURM_PROCID=str(node),
                               SLURM_LOCALID="0", SLURM_NTASKS="2").items():
            monkeypatch.setenv(key, value)
        argvs.append(job.node_argv(submitit.JobEnvironment()))
    url = "tcp://gpu07:24242"  # the first node; a port from the job id, the same after a requeue
    assert argvs == [["--num-gpus", "8", "--num-machines", "2", "--machine-rank", str(n), "--dist-url", url,
                      "--config-file", "c.yaml", "SEED", "1"] for n in (0, 1)]
    resumed = job.checkpoint().function  # what submitit requeues
    assert resumed.train_args == ["--resume", "--config-file", "c.yaml", "SEED", "1"]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


RUN = [*TINY_TRAINING, "SOLVER.MAX_ITER", 24, "SOLVER.CHECKPOINT_PERIOD", 4, "TEST.EVAL_PERIOD", 0, "SEED", 7]


def test_a_preempted_job_requeues_itself_and_ends_as_the_uninterrupted_run(datasets_root, tmp_path):
    full = tmp_path / "full"
    run_tool("train_net.py", "--config-file", CONFIG, *RUN, "OUTPUT_DIR", full, datasets_root=datasets_root)
    out = tmp_path / "job"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", DETECTRON2_DATASETS=str(datasets_root))
    tool = subprocess.Popen([sys.executable, TOOL, "--cluster", "local", "--gpus-per-node", "1", "--time", "30",
                             "--wait", "--config-file", CONFIG, *map(str, RUN), "OUTPUT_DIR", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    controller = None
    try:
        first = tool.stdout.readline()
        assert first.startswith("submitted job "), first + tool.stderr.read()
        controller = int(first.split()[2])  # the local executor's job id: its controller's PID
        deadline = time.monotonic() + 180
        while not (out / "model_0000003.pth").exists():  # training has begun
            assert time.monotonic() < deadline and tool.poll() is None, tool.stderr.read()
            time.sleep(0.05)
        os.kill(controller, signal.SIGTERM)  # as LocalJob._interrupt(): the preemption signal
        stdout, stderr = tool.communicate(timeout=240)
    finally:
        if tool.poll() is None:
            tool.kill()
        if controller is not None and os.path.exists(f"/proc/{controller}"):
            os.kill(controller, signal.SIGKILL)
    assert tool.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert f"job {controller} done" in stdout
    log = (out / "submitit" / str(controller) / f"{controller}_0_log.out").read_text()
    err = (out / "submitit" / str(controller) / f"{controller}_0_log.err").read_text()
    assert "Requeued job" in log, log[-3000:]
    stop = [line for line in err.splitlines() if line.startswith("stopped by SIGTERM after iteration")]
    assert len(stop) == 1 and " --resume " in stop[0], err[-3000:]
    stopped_at = int(stop[0].split("after iteration ")[1].split()[0])
    assert 4 <= stopped_at < 24  # mid-run, not after the end
    assert f"Starting training from iteration {stopped_at}" in log
    uninterrupted, resumed = _weights(full / "model_final.pth"), _weights(out / "model_final.pth")
    assert uninterrupted.keys() == resumed.keys()
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)
