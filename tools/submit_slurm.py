#!/usr/bin/env python
"""Submit tools/train_net.py to a SLURM cluster through submitit: N nodes x G GPUs, checkpointed
and requeued with --resume when the job is preempted or reaches its time limit.

    python tools/submit_slurm.py --config-file configs/ade20k/deeplab_v3_plus_R_50.yaml \\
        --nodes 2 --gpus-per-node 8 --partition learn --time 4320 --constraint volta32gb \\
        --mail-user me@lab.org OUTPUT_DIR output/ade20k_r50

Each node runs one task: train_net's launcher, which starts --gpus-per-node processes (one per
GPU) with --num-machines = the job's node count, --machine-rank = the node's index and
--dist-url tcp://FIRST_NODE:PORT, all read from submitit's JobEnvironment (PORT and PORT + 1 are
used; PORT defaults to one derived from the job id, the same after a requeue).

Preemption and time-out: the job's preemption signal is SIGTERM (``#SBATCH --signal=TERM@DELAY``,
DELAY = --signal-delay seconds before the time limit; SLURM sends SIGTERM on preemption too), the
signal train_net already answers with a checkpoint of the current iteration. Once every process
has stopped, submitit's handler calls the job's ``checkpoint()``, which returns the same job with
``--resume``, and requeues it (``scontrol requeue``; at most --max-timeouts times after a
time-out). The requeued job resumes exactly: on one process it ends with the weights of an
uninterrupted run (tests/engine/test_submit_slurm.py).

--cluster local runs the job on this machine through submitit's local executor (one node; what the
test uses), --cluster debug in this process. --dry-run prints the sbatch script and submits
nothing. Bad input (config, options) is refused before anything is submitted: one line, exit 2.
"""
import argparse
import os
import re
import shlex
import signal
import sys

# submitit reads its preemption signal when imported: SIGTERM, not its default SIGUSR2, which
# train_net's launcher uses to tell its processes "stop at once" (engine/stops.py).
PREEMPT_SIGNAL = "TERM"
os.environ["SUBMITIT_PREEMPT_SIGNAL"] = PREEMPT_SIGNAL

import submitit  # noqa: E402

TOOLS = os.path.dirname(os.path.abspath(__file__))
TRAIN_NET = os.path.join(TOOLS, "train_net.py")


class TrainJob:
    """One node's task: train_net with this node's machine rank; submitit's Checkpointable
    protocol (``checkpoint``) requeues it with --resume."""

    def __init__(self, train_args, gpus_per_node, port=None):
        self.train_args, self.gpus_per_node, self.port = list(train_args), gpus_per_node, port

    def node_argv(self, env):
        """train_net's argv on the node ``env`` (submitit's JobEnvironment) describes."""
        if env.num_nodes > 1:
            port = self.port or 20000 + int(re.sub(r"\D", "", env.raw_job_id) or 0) % 20000
            url = f"tcp://{env.hostnames[0]}:{port}"
        else:
            url = f"tcp://127.0.0.1:{self.port}" if self.port else "auto"
        return ["--num-gpus", str(self.gpus_per_node), "--num-machines", str(env.num_nodes),
                "--machine-rank", str(env.node), "--dist-url", url] + self.train_args

    def __call__(self):
        if TOOLS not in sys.path:  # train_net, for this process and the ones its launcher spawns
            sys.path.insert(0, TOOLS)
        import train_net
        from detectron2.engine import default_argument_parser
        from longtailseg.engine.stops import StopRequested

        env = submitit.JobEnvironment()
        argv = self.node_argv(env)
        print(f"{env}: python {shlex.join([TRAIN_NET] + argv)}", flush=True)
        parser = default_argument_parser()
        args = parser.parse_args(argv)
        try:
            return train_net.train(parser, args, argv)
        except StopRequested as e:
            print(e.one_line([TRAIN_NET] + argv), file=sys.stderr, flush=True)
            if e.signum == getattr(signal, f"SIG{PREEMPT_SIGNAL}"):
                # Every process has stopped (with a checkpoint if training had begun): deliver
                # the signal to submitit's handler, which the launcher's has given way to again;
                # on the first task it calls checkpoint() and requeues (and exits).
                os.kill(os.getpid(), e.signum)
            sys.exit(e.exit_status)  # the other nodes' tasks; or a stop that is not a preemption

    def checkpoint(self, *args, **kwargs):
        """The job to requeue: the same, resuming from OUTPUT_DIR's last checkpoint."""
        resumed = TrainJob(["--resume"] + [a for a in self.train_args if a != "--resume"],
                           self.gpus_per_node, self.port)
        return submitit.helpers.DelayedSubmission(resumed)


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    train = parser.add_argument_group("training (as tools/train_net.py)")
    train.add_argument("--config-file", required=True, metavar="FILE", help="the config to train")
    train.add_argument("--resume", action="store_true", help="resume OUTPUT_DIR's run")
    train.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    train.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, last")
    job = parser.add_argument_group("job")
    job.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    job.add_argument("--gpus-per-node", type=int, default=8,
                     help="processes per node (one per GPU; CPU processes without CUDA)")
    job.add_argument("--cpus-per-task", type=int, default=10, help="CPUs of each node's task")
    job.add_argument("--mem-gb", type=int, default=None, help="memory per node")
    job.add_argument("--time", type=int, default=4320, metavar="MINUTES", help="time limit")
    job.add_argument("--partition", help="SLURM partition")
    job.add_argument("--constraint", help="e.g. volta32gb")
    job.add_argument("--account", help="SLURM account to charge")
    job.add_argument("--qos", help="SLURM quality of service")
    job.add_argument("--mail-user", help="where SLURM mails the job's events")
    job.add_argument("--mail-type", default=None, help="e.g. END,FAIL (default: ALL with --mail-user)")
    job.add_argument("--comment", help="SLURM job comment")
    job.add_argument("--exclude", help="nodes not to run on")
    job.add_argument("--job-name", default=None, help="default: longtailseg_<config name>")
    job.add_argument("--job-dir", default=None,
                     help="submitit's folder (scripts, logs, pickles; %%j is the job id); default OUTPUT_DIR/submitit/%%j")
    job.add_argument("--signal-delay", type=int, default=120, metavar="SECONDS",
                     help="SIGTERM this long before the time limit (time to write the checkpoint)")
    job.add_argument("--max-timeouts", type=int, default=20, help="requeues after a time-out at most")
    job.add_argument("--port", type=int, default=None, help="--dist-url's port (default: from the job id)")
    job.add_argument("--cluster", choices=["slurm", "local", "debug"], default="slurm",
                     help="local: this machine, through submitit's local executor (one node)")
    job.add_argument("--wait", action="store_true", help="wait for the job to end and print its result")
    job.add_argument("--dry-run", action="store_true", help="print the sbatch script; submit nothing")
    return parser


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _check(args, parser):
    """Refuse what would fail on the cluster, before anything is submitted; returns the config."""
    from longtailseg.engine import load_config
    from longtailseg.errors import LongTailSegError, one_line

    if args.opts and args.opts[0].startswith("--"):
        _fail(f"{args.opts[0]} after the KEY VALUE overrides; give the options before them")
    for name in ("nodes", "gpus_per_node", "cpus_per_task", "time"):
        if getattr(args, name) < 1:
            _fail(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if args.cluster != "slurm" and args.nodes != 1:
        _fail(f"--cluster {args.cluster} runs one node; --nodes {args.nodes} needs --cluster slurm")
    if args.port is not None and not 1024 <= args.port < 65535:
        _fail(f"--port {args.port}: choose a port from 1024 to 65534 (PORT + 1 is used too)")
    try:
        return load_config(os.path.abspath(args.config_file), args.opts)
    except LongTailSegError as e:
        _fail(one_line(e))


def slurm_parameters(args, name):
    """What submitit's AutoExecutor.update_parameters gets (slurm_* ones apply to SLURM only)."""
    params = dict(name=name, timeout_min=args.time, nodes=args.nodes, tasks_per_node=1,
                  gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                  slurm_signal_delay_s=args.signal_delay,
                  # the job's environment may not be the submitter's (sbatch --export)
                  slurm_setup=[f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL}"])
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    for key in ("partition", "constraint", "account", "qos", "comment", "exclude"):
        if getattr(args, key):
            params[f"slurm_{key}"] = getattr(args, key)
    if args.mail_user:
        params["slurm_mail_user"] = args.mail_user
        params["slurm_mail_type"] = args.mail_type or "ALL"
    return params


def sbatch_script(args, name, folder):
    """The sbatch script submitit writes for these options (--dry-run)."""
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem, _make_sbatch_string

    generic = SlurmExecutor._equivalence_dict()  # timeout_min -> time, tasks_per_node -> ntasks_per_node...
    params = {k[len("slurm_"):] if k.startswith("slurm_") else generic.get(k, k): v
              for k, v in slurm_parameters(args, name).items()}
    if "mem" in params:
        params["mem"] = _convert_mem(params["mem"])
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(folder)])
    return _make_sbatch_string(command=command, folder=folder, **params)


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    cfg = _check(args, parser)
    name = args.job_name or "longtailseg_" + os.path.splitext(os.path.basename(args.config_file))[0]
    folder = args.job_dir or os.path.join(cfg.OUTPUT_DIR, "submitit", "%j")
    train_args = ["--config-file", os.path.abspath(args.config_file)]
    train_args += ["--resume"] * args.resume + ["--eval-only"] * args.eval_only + list(args.opts)
    if args.dry_run:
        print(sbatch_script(args, name, folder))
        print(f"# job: python {shlex.join([TRAIN_NET] + TrainJob(train_args, args.gpus_per_node).node_argv(_DryRunNode(args.nodes)))}"
              " (on node 0)")
        return None
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=args.cluster,
                                         slurm_max_num_timeout=args.max_timeouts)
    except RuntimeError as e:  # no sbatch / srun on this machine
        _fail(f"{e}; run this on a SLURM login node, or use --cluster local to run here")
    executor.update_parameters(**slurm_parameters(args, name))
    job = executor.submit(TrainJob(train_args, args.gpus_per_node, args.port))
    if "%j" in folder and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)  # submitit made the folder's name literally before it knew the job id
    print(f"submitted job {job.job_id} ({args.cluster}); logs: {job.paths.stdout} and .err", flush=True)
    if not args.wait:
        return job
    try:
        result = job.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        _fail(f"job {job.job_id} failed: {lines[-1] if lines else e}; log: {job.paths.stderr}")
    print(f"job {job.job_id} done" + (f": {result}" if result else ""))
    return job


class _DryRunNode:
    """What JobEnvironment says on node 0 of ``nodes``, for --dry-run's command line."""

    def __init__(self, nodes):
        self.num_nodes, self.node, self.raw_job_id, self.hostnames = nodes, 0, "%j", ["FIRST_NODE"]


if __name__ == "__main__":
    main()
