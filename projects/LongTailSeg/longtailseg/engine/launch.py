"""``launch`` that also runs several processes without CUDA, stops them all cleanly, and reports the
failure that matters.

Detectron2 v0.6's ``launch`` asserts CUDA and uses NCCL. With CUDA each process runs Detectron2's
own ``_distributed_worker`` (NCCL); without CUDA and ``num_gpus_per_machine > 1`` the processes are
joined by a gloo process group, so the same ``--num-gpus N`` command works on a laptop or CI.

The processes are started and watched here rather than by ``torch.multiprocessing.spawn``, so that

* a stop reaches all of them (see ``stops.py``): SIGINT or SIGTERM to the launcher alone (``kill``,
  a job scheduler) is forwarded to every process as SIGUSR1, "stop after this iteration"; they agree
  on the iteration, the main process writes its checkpoint and all exit, then the launcher raises
  ``StopRequested``. A Ctrl-C in a terminal reaches every process directly too, which changes
  nothing. A second signal to the launcher is forwarded as SIGUSR2, "stop at once". The
  processes start with SIGINT ignored until their handlers are installed (no KeyboardInterrupt
  traceback from a Ctrl-C during their start), and get SIGINT if the launcher dies (as with
  ``torch.multiprocessing``), so they stop with a checkpoint rather than run on as orphans;
* a process killed by a signal (the OOM killer's SIGKILL) is named in one line, a LongTailSegError,
  instead of ``ProcessExitedException``'s traceback;
* when one process fails, the others lose their connection to it and fail too ("Connection closed
  by peer"). Each process sends its failure to the launcher through a pipe (no temporary folder
  to leave behind); the launcher raises the root cause: a LongTailSeg error (one line, naming the
  cause) if any process had one, else the earliest failure with its traceback. The others are
  told to stop at once (SIGUSR2) and killed if still running ``STOP_GRACE_S`` later.

Several machines (``--num-machines N --machine-rank R --dist-url tcp://HOST:PORT``) run the same
way with or without CUDA: global rank ``R * num_gpus_per_machine + local rank`` and one local
process group per machine, as Detectron2 makes them, with gloo instead of NCCL without CUDA (so a
multi-machine run can be tested as N launchers on one host). The launchers talk through
``machines.py``: a machine that fails is reported, in the same line, by all.

The default ``--dist-url`` of Detectron2's argument parser is a port fixed per user, so two runs of
one user on one machine collided (EADDRINUSE): like "auto", it is replaced by a free port on a
single machine. The URL of a multi-machine run is used as given.
"""
import collections
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import time
import traceback
from datetime import timedelta
from multiprocessing import connection as mp_connection

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import detectron2.engine.defaults as detectron2_defaults
from detectron2.engine.launch import _distributed_worker, _find_free_port
from detectron2.utils import comm

from ..errors import LongTailSegError, one_line
from .stops import STOP_AFTER_STEP, STOP_NOW, StopRequested, handling_stops, signal_name

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)
STOP_GRACE_S = 10  # after one process failed, how long the others have to stop before SIGKILL
_KILL_REASONS = {signal.SIGKILL: " (the system's OOM killer does this when memory runs out)",
                 signal.SIGSEGV: " (a crash in native code)", signal.SIGBUS: " (a crash in native code)",
                 signal.SIGABRT: " (an abort in native code)"}


class WorkerProcessError(RuntimeError):
    """A worker process failed with an error that is not a LongTailSeg one; the message holds
    that process's traceback."""


class ProcessKilled(LongTailSegError):
    """A worker process was killed by a signal that nobody sent it on purpose (the OOM killer)."""


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None,
           args=(), timeout=DEFAULT_TIMEOUT, machines=None):
    """Same arguments as ``detectron2.engine.launch``; raises ``StopRequested`` after a SIGINT or
    SIGTERM (see ``stops.py``). With several machines, ``machines`` is this launcher's
    :class:`~longtailseg.engine.machines.Machines` when the caller has already met the others
    (``tools/train_net.py`` does, before its processes start); else they meet here."""
    world_size = num_gpus_per_machine * num_machines
    if world_size <= 1:
        with handling_stops():
            return main_func(*args)
    cuda = torch.cuda.is_available()
    if num_machines > 1 and machines is None:
        from .machines import Machines

        machines = Machines(num_machines, machine_rank, dist_url, timeout)
        machines.start()
    dist_url = local_dist_url(dist_url, num_machines)
    processes = _Processes(num_gpus_per_machine, machine_rank, world_size)
    processes.run(cuda, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout)
    outcome = processes.outcome()
    if machines is not None:
        machines.finish(outcome)  # raises the outcome of the whole run
    elif outcome is not None:
        raise outcome


def local_dist_url(dist_url, num_machines):
    """A free port on this machine for "auto" and for the default of Detectron2's argument parser;
    any other URL, and every URL of a multi-machine run, as given."""
    default = detectron2_defaults.default_argument_parser().get_default("dist_url")
    if num_machines == 1 and dist_url in (None, "", "auto", default):
        return f"tcp://127.0.0.1:{_find_free_port()}"
    return dist_url


class _Processes:
    """The launcher's side: starts the processes, forwards stops, collects what they report."""

    def __init__(self, nprocs, machine_rank, world_size):
        self.nprocs, self.first_rank, self.world_size = nprocs, machine_rank * nprocs, world_size
        self.processes, self.readers, self.records, self.exits = [], {}, [], {}
        self.sent = collections.defaultdict(set)  # local rank -> the signals the launcher sent it
        self.received = []  # the SIGINT / SIGTERM the launcher got

    def run(self, cuda, *worker_args):
        ctx = mp.get_context("spawn")
        _start_quiet_resource_tracker()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for local_rank in range(self.nprocs):
                reader, writer = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_worker, args=(local_rank, writer, cuda) + worker_args,
                                      daemon=False)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited until the child's handler
                try:
                    process.start()
                finally:
                    signal.signal(signal.SIGINT, self._on_signal)
                writer.close()
                self.processes.append(process)
                self.readers[reader] = local_rank
            self._wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum, frame):
        self.received.append(signum)
        for local_rank in range(len(self.processes)):
            self._send(local_rank, STOP_AFTER_STEP if len(self.received) == 1 else STOP_NOW)

    def _send(self, local_rank, signum):
        if local_rank not in self.exits:
            self.sent[local_rank].add(signum)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.processes[local_rank].pid, signum)

    def _wait(self):
        sentinels = {p.sentinel: rank for rank, p in enumerate(self.processes)}
        deadline, killed = None, False  # once the others were told to stop at once: when they get SIGKILL
        while sentinels:
            timeout = None if deadline is None or killed else max(0.0, deadline - time.monotonic())
            for ready in mp_connection.wait(list(sentinels) + list(self.readers), timeout):
                if ready in self.readers:
                    self._receive(ready)
                else:
                    local_rank = sentinels.pop(ready)
                    self.processes[local_rank].join()
                    self.exits[local_rank] = self.processes[local_rank].exitcode
            if deadline is None and self._one_failed():
                deadline = time.monotonic() + STOP_GRACE_S
                for local_rank in range(self.nprocs):
                    self._send(local_rank, STOP_NOW)
            elif deadline is not None and not killed and time.monotonic() >= deadline:
                killed = True
                for local_rank in range(self.nprocs):
                    self._send(local_rank, signal.SIGKILL)
        # What the processes sent before they exited (their DataLoader workers may hold the pipes
        # open a few seconds longer: no waiting for the end of the pipe).
        for reader in list(self.readers):
            while reader in self.readers and reader.poll(0):
                self._receive(reader)

    def _receive(self, reader):
        try:
            self.records.append(reader.recv())
        except (EOFError, OSError):  # the process has exited
            del self.readers[reader]
            reader.close()

    def _one_failed(self):
        """Whether a process failed or stopped on its own, so that the others cannot go on."""
        return (any(code != 0 for code in self.exits.values())
                or any(r["kind"] == "failed" or not r["agreed"] for r in self.records))

    def outcome(self):
        """What stopped the processes (an exception to raise), or None (see the module docstring)."""
        killed = [(rank, -code) for rank, code in sorted(self.exits.items())
                  if code < 0 and -code not in self.sent[rank] and -code not in self.received]
        if killed:
            rank, signum = killed[0]
            return ProcessKilled(
                f"process {self.first_rank + rank} of {self.world_size} was killed by {signal_name(signum)}"
                f"{_KILL_REASONS.get(signum, '')}; the others were stopped; resume from the last "
                "checkpoint with --resume")
        # An agreed stop whose signal this launcher did not get: a stop on another machine.
        stops = sorted((r for r in self.records if r["kind"] == "stopped"
                        and (self.received or r["signum"] in (signal.SIGINT, signal.SIGTERM) or r["agreed"])),
                       key=lambda r: r["rank"])
        failures = [r for r in self.records if r["kind"] == "failed"]
        if stops or (self.received and (failures or any(self.exits.values()))):
            first = stops[0] if stops else {"signum": self.received[0], "resumable": False,
                                            "detail": "before the first iteration of this run"}
            return StopRequested(self.received[0] if self.received else first["signum"], first["detail"],
                                 first["resumable"])
        if failures:
            ours = [r for r in failures if r["ours"]]
            first = min(ours or failures, key=lambda r: r["time"])
            if first["ours"]:
                error = LongTailSegError(first["message"])
            else:
                error = WorkerProcessError(f"process {first['rank']} failed first ({len(failures)} processes "
                                           f"failed):\n{first['traceback']}")
            error.time = first["time"]
            return error
        for rank, code in sorted(self.exits.items()):
            if code != 0:
                return WorkerProcessError(f"process {self.first_rank + rank} of {self.world_size} exited "
                                          f"with status {code} and no error message")
        return None


def _start_quiet_resource_tracker():
    """Start multiprocessing's resource tracker (which the processes share) with its warning about
    a killed process's semaphores (tqdm's lock) off: the launcher's one line already names the
    killed process, and the tracker's warning would come after it."""
    from multiprocessing import resource_tracker

    saved = list(sys.warnoptions)
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions[:] = saved


def _worker(local_rank, conn, cuda, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url,
            args, timeout):
    """One process: its set-up, ``main_func``, and what it reports to the launcher."""
    mp._prctl_pr_set_pdeathsig(signal.SIGINT)  # the launcher died: stop (with a checkpoint)
    rank = machine_rank * num_gpus_per_machine + local_rank
    with handling_stops(from_launcher=True):
        try:
            if cuda:
                _distributed_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank,
                                    dist_url, args, timeout)
            else:
                _cpu_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url,
                            args, timeout)
        except StopRequested as e:
            _ignore_stops()
            _report(conn, {"kind": "stopped", "rank": rank, "signum": e.signum, "detail": e.detail,
                           "resumable": e.resumable, "agreed": e.agreed})
            if not e.agreed:  # the others may be anywhere: no goodbye to them
                _exit(0)
        except BaseException as e:
            _ignore_stops()  # a stop sent now (another process failed too) must not cut the report
            _report(conn, {"kind": "failed", "rank": rank, "time": time.time(), "agreed": False,
                           "ours": isinstance(e, LongTailSegError), "message": one_line(e),
                           "traceback": traceback.format_exc()})
            _exit(1)  # no teardown: the other processes may wait in a collective
        try:
            if not cuda:
                comm.synchronize()  # every process is done with its peers before any closes them
                _release_process_groups()
        except StopRequested:
            _exit(0)


def _ignore_stops():
    """This process is reporting how it ended: a stop signal has nothing left to stop."""
    for signum in (signal.SIGINT, signal.SIGTERM, STOP_AFTER_STEP, STOP_NOW):
        signal.signal(signum, signal.SIG_IGN)


def _report(conn, record):
    with contextlib.suppress(OSError):  # the launcher is gone
        conn.send(record)


def _exit(status):
    """Exit now: no interpreter teardown, in which gloo's threads may abort."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _cpu_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args,
                timeout):
    """Detectron2's ``_distributed_worker`` without CUDA: the same global rank and local process
    groups, joined by gloo (as Detectron2's main branch does without CUDA)."""
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                            rank=global_rank, timeout=timeout)
    create_local_process_group(num_gpus_per_machine)
    comm.synchronize()
    main_func(*args)


def create_local_process_group(num_workers_per_machine):
    """The process group of this machine's processes, which Detectron2's ``comm.get_local_rank`` /
    ``get_local_size`` read: Detectron2's own ``comm.create_local_process_group`` where it has
    one (its main branch), else what v0.6's ``_distributed_worker`` does (every process creates
    every machine's group, in the same order, as ``new_group`` requires)."""
    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(num_workers_per_machine)
        return
    assert comm._LOCAL_PROCESS_GROUP is None
    machine_rank = dist.get_rank() // num_workers_per_machine
    for i in range(dist.get_world_size() // num_workers_per_machine):
        group = dist.new_group(list(range(i * num_workers_per_machine, (i + 1) * num_workers_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _release_process_groups():
    """Destroy the process groups while the interpreter is fully alive.

    ``destroy_process_group`` alone is not enough: Detectron2 keeps Python references to gloo
    groups (``comm._LOCAL_PROCESS_GROUP`` and the cached ``_get_global_gloo_group()`` that every
    evaluation's ``comm.gather`` creates), so the C++ group outlived it and was destroyed during
    interpreter finalization, where gloo's worker threads aborted the process ("terminate called
    without an active exception", SIGABRT) in about 1 of 12 successful two-process evaluations.
    """
    dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None
    cached_gloo_group = getattr(comm, "_get_global_gloo_group", None)
    if hasattr(cached_gloo_group, "cache_clear"):
        cached_gloo_group.cache_clear()
    gc.collect()  # groups held only by reference cycles (e.g. a DDP model in the trainer) go now


@contextlib.contextmanager
def ddp_arguments(find_unused_parameters=False):
    """While active, ``DefaultTrainer`` wraps its model in DDP with these arguments.

    ``DefaultTrainer.__init__`` calls ``create_ddp_model(model, broadcast_buffers=False)``, which
    gives DDP ``device_ids=[local rank]``: CUDA only. CPU processes need ``device_ids=None``, and
    models that leave parameters without gradient (experts, frozen stage 2) need
    ``find_unused_parameters``. Those arguments are the only change, so the trainer's own
    ``__init__`` runs with them filled in rather than being copied.
    """
    original = detectron2_defaults.create_ddp_model

    @functools.wraps(original)
    def create_ddp_model(model, **kwargs):
        if not next(model.parameters()).is_cuda:
            kwargs.setdefault("device_ids", None)
        kwargs.setdefault("find_unused_parameters", find_unused_parameters)
        return original(model, **kwargs)

    detectron2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        detectron2_defaults.create_ddp_model = original
