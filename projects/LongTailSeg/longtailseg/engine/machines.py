"""The launchers of a multi-machine run talk to each other, so that a run on several machines
starts, fails and stops as one.

Detectron2's ``launch`` starts the processes of each machine independently: a machine whose
config does not load exits, and the processes of the others wait in ``init_process_group`` until
its 30-minute timeout; a process that fails on one machine is seen by the others only as "Connection
closed by peer", so each machine reports a different error. Here the launcher of each machine
(``tools/train_net.py --num-machines N --machine-rank R``) joins a ``torch.distributed.TCPStore``
that machine 0's launcher serves at the ``--dist-url`` host, on the port after the URL's (the
processes' own process group uses the URL's port, as in Detectron2), and

* before any process starts, every launcher says whether its config loaded (:meth:`Machines.start`):
  a machine's one-line config error ends every machine with that line;
* after its processes ended, every launcher says how they ended (:meth:`Machines.finish`), and all
  raise the same outcome: a killed process, else a stop (SIGINT / SIGTERM on any machine), else
  the earliest LongTailSeg error (one line), else the earliest other failure.

Machine 0's launcher serves the store, so it leaves only after every launcher has read what it
needs.
"""
import json
import logging
import time
from datetime import timedelta
from urllib.parse import urlparse

import torch.distributed as dist

from ..errors import LongTailSegError

logger = logging.getLogger(__name__)
# How long the others wait for a launcher's outcome once their own processes ended: a process that
# failed makes the others fail within seconds (plus the launchers' STOP_GRACE_S), but after a
# success machine 0's main process may still be evaluating, as long as a collective may wait.
OUTCOME_TIMEOUT = timedelta(minutes=30)


def control_address(dist_url, num_machines):
    """(host, port) of the launchers' store for ``--dist-url tcp://HOST:PORT``: HOST, PORT + 1."""
    parsed = urlparse(dist_url or "")
    if parsed.scheme != "tcp" or not parsed.hostname or not parsed.port:
        raise LongTailSegError(
            f"--dist-url {dist_url!r}: a run on {num_machines} machines needs --dist-url tcp://HOST:PORT "
            "with HOST the address of machine 0 (the same URL on every machine)")
    if parsed.port >= 65535:
        raise LongTailSegError(f"--dist-url {dist_url}: the launchers of a multi-machine run also use "
                               "the port after PORT; choose a PORT below 65535")
    return parsed.hostname, parsed.port + 1


class Machines:
    """This machine's launcher among the ``num_machines`` launchers of one run."""

    def __init__(self, num_machines, machine_rank, dist_url, timeout=timedelta(minutes=30)):
        if not 0 <= machine_rank < num_machines:
            raise LongTailSegError(f"--machine-rank {machine_rank}: a run on {num_machines} machines "
                                   f"numbers them 0 to {num_machines - 1}")
        self.num_machines, self.rank, self.timeout = num_machines, machine_rank, timeout
        host, port = control_address(dist_url, num_machines)
        try:
            # Machine 0 serves; the others connect, retrying until machine 0 is up or ``timeout``.
            self.store = dist.TCPStore(host, port, num_machines, machine_rank == 0, timeout=timeout,
                                       wait_for_workers=False)
        except (RuntimeError, OSError) as e:  # a taken port, an unreachable host
            raise LongTailSegError(
                f"the launchers of the {num_machines} machines could not meet at {host}:{port} (the "
                f"port after --dist-url's): {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                "check that machine 0 runs with the same --dist-url and that the port is free") from None

    def _exchange(self, stage, record, timeout):
        """Publish this machine's ``record`` for ``stage``, return every machine's (by rank)."""
        self.store.set(f"{stage}/{self.rank}", json.dumps(record))
        keys = [f"{stage}/{r}" for r in range(self.num_machines)]
        try:
            self.store.wait(keys, timeout)
        except RuntimeError:  # timed out, or machine 0's launcher (the store) is gone
            missing = [r for r in range(self.num_machines) if r != self.rank and not self._has(keys[r])]
            raise LongTailSegError(
                f"machine(s) {', '.join(map(str, missing)) or '0'} of {self.num_machines} did not report "
                f"({stage}) within {timeout}; start every machine with the same --num-machines and "
                "--dist-url, or look at their output") from None
        records = [json.loads(self.store.get(k)) for k in keys]
        self.store.set(f"{stage}-read/{self.rank}", "")
        if self.rank == 0:  # the store lives in this process: keep it until every launcher has read
            try:
                self.store.wait([f"{stage}-read/{r}" for r in range(self.num_machines)], timeout)
            except RuntimeError:
                pass
        return records

    def _has(self, key):
        try:
            return self.store.check([key])
        except RuntimeError:
            return False

    def start(self, error=None):
        """Say whether this machine can start (``error``: its one-line error) and wait for every
        machine to say it; raises the first machine's error on every machine."""
        if self.rank != 0:
            logger.info(f"machine {self.rank} of {self.num_machines}: waiting for the others")
        records = self._exchange("start", {"error": error}, self.timeout)
        failed = [(r, rec["error"]) for r, rec in enumerate(records) if rec["error"]]
        if failed:
            rank, message = failed[0]
            raise LongTailSegError(f"{message} (machine {rank} of {self.num_machines}; no machine started)")

    def finish(self, outcome):
        """Exchange how this machine's processes ended (an exception or None) and raise the
        outcome of the whole run (see the module docstring); returns when all succeeded."""
        from .stops import StopRequested

        records = self._exchange("finish", describe(outcome), OUTCOME_TIMEOUT)
        for kind in ("killed", "stopped", "ours", "other"):
            # A stop: the machine whose launcher got the SIGINT / SIGTERM (the others' processes
            # stopped on the launcher's SIGUSR1) first.
            found = sorted(((rec.get("signum") not in (2, 15), rec["time"], r, rec)
                            for r, rec in enumerate(records) if rec["kind"] == kind), key=lambda t: t[:3])
            if not found:
                continue
            _, _, rank, rec = found[0]
            if kind == "stopped":
                raise StopRequested(rec["signum"], rec["detail"], rec["resumable"])
            where = f"(machine {rank} of {self.num_machines})"
            if kind in ("killed", "ours"):
                raise LongTailSegError(f"{rec['message']} {where}")
            from .launch import WorkerProcessError

            raise WorkerProcessError(f"{where} {rec['message']}")


def describe(outcome):
    """A JSON-able record of how one machine's processes ended."""
    from .launch import ProcessKilled, WorkerProcessError
    from .stops import StopRequested

    now = time.time()
    if outcome is None:
        return {"kind": "ok", "time": now}
    if isinstance(outcome, StopRequested):
        return {"kind": "stopped", "time": now, "signum": outcome.signum, "detail": outcome.detail,
                "resumable": outcome.resumable}
    kind = ("killed" if isinstance(outcome, ProcessKilled) else "ours" if isinstance(outcome, LongTailSegError)
            else "other")
    assert isinstance(outcome, (LongTailSegError, WorkerProcessError)), type(outcome)
    return {"kind": kind, "time": getattr(outcome, "time", now), "message": str(outcome)}
