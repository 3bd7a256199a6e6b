"""Stops that lose little: Ctrl-C (SIGINT) and SIGTERM end a training run between two iterations,
with a checkpoint of the iteration just done, and one line saying how to resume.

* ``handling_stops()`` installs the handlers in the process that trains (``launch`` does it in
  every process it runs; ``Trainer.train`` for a trainer used from one's own code). While the
  training loop runs, a handler only records the signal: stopping in the middle of a step would
  leave no consistent state to save.
* ``StopHook``, the trainer's last hook, looks at the record after every iteration. With several
  processes they agree through one all_reduce, so that all stop after the same iteration. The
  main process writes ``model_<iteration>.pth`` as the periodic checkpointer names it and points
  ``last_checkpoint`` at it, and every process raises ``StopRequested``.
* Outside the training loop (set-up, the final evaluation), and on a second signal, the handler
  raises ``StopRequested`` at once: every file is written atomically, so nothing half-written is
  left, and ``last_checkpoint`` keeps naming the last complete checkpoint.

Exit status (``tools/train_net.py``): 128 + the signal's number, 130 for SIGINT and 143 for SIGTERM,
as a shell reports a process ended by that signal. A stop asked for by the user is neither success
(0) nor bad input (2), and a job scheduler can tell it from both (e.g. to requeue the job).
"""
import contextlib
import logging
import os
import shlex
import signal
import threading

import torch
import torch.distributed as dist

from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger("longtailseg")

# What the launcher sends its worker processes (see launch.py): SIGUSR1 "stop after this
# iteration" for its first SIGINT / SIGTERM, SIGUSR2 "stop at once" for any after that.
STOP_AFTER_STEP, STOP_NOW = signal.SIGUSR1, signal.SIGUSR2
_USER_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """The run was stopped by SIGINT or SIGTERM. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way (loading, data checks, Detectron2's training loop) rewords it."""

    def __init__(self, signum, detail, resumable=False, agreed=False):
        super().__init__(signum, detail, resumable, agreed)
        self.signum, self.detail, self.resumable, self.agreed = int(signum), detail, resumable, agreed

    @property
    def signal_name(self):
        return signal_name(self.signum)

    @property
    def exit_status(self):
        return 128 + self.signum

    def __str__(self):
        return f"stopped by {self.signal_name} {self.detail}"

    def one_line(self, argv):
        """The line a tool prints: what was kept and the command that continues the run."""
        if self.resumable:
            return f"{self}; resume with: python " + shlex.join(
                [argv[0], "--resume"] + [a for a in argv[1:] if a != "--resume"])
        return f"{self}; run it again with: python {shlex.join(argv)}"


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _State:
    pid = None  # the process whose handlers are installed (forked DataLoader workers inherit them)
    phase = "setup"  # "training" (the loop runs: record only), "setup" / "finishing" (stop at once)
    requested = 0  # the signal that asked for a stop after this iteration, 0 if none
    direct = False  # whether SIGINT / SIGTERM itself (not the launcher's SIGUSR1) asked for it
    iteration = None


_state = _State()


def _on_signal(signum, frame):
    if os.getpid() != _state.pid:  # a forked DataLoader worker: the training process stops it
        return
    direct = signum in _USER_SIGNALS
    if signum == STOP_NOW or _state.phase != "training" or (direct and _state.direct):
        raise StopRequested(signum, *_stopped_at_once())
    if not _state.requested:
        _state.requested = signum
    _state.direct = _state.direct or direct


def _stopped_at_once():
    """(detail, resumable) of a stop that does not wait for the end of the iteration."""
    if _state.phase == "finishing":
        return "during the final evaluation (training had finished: model_final.pth is written)", True
    if _state.phase == "setup":
        return "before the first iteration of this run (last_checkpoint, if any, is unchanged)", False
    return (f"at once, during iteration {_state.iteration + 1} (a second signal; last_checkpoint still "
            "names the last complete checkpoint)", True)


@contextlib.contextmanager
def handling_stops(from_launcher=False):
    """SIGINT and SIGTERM (and, with ``from_launcher``, the launcher's SIGUSR1 / SIGUSR2) stop this
    process as the module docstring says. Nested use, and use outside the main thread, changes
    nothing."""
    if _state.pid == os.getpid() or threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = _USER_SIGNALS + ((STOP_AFTER_STEP, STOP_NOW) if from_launcher else ())
    previous = {s: signal.getsignal(s) for s in signums}
    _state.pid, _state.phase, _state.requested, _state.direct = os.getpid(), "setup", 0, False
    for s in signums:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.pid = None


def _agree(requested):
    """The signal one of the processes recorded (the largest number), the same in all of them."""
    if comm.get_world_size() == 1:
        return requested
    value = torch.tensor([requested], dtype=torch.int64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=comm._get_global_gloo_group())
    return int(value.item())


class StopHook(HookBase):
    """Stops training after the iteration in which SIGINT or SIGTERM arrived, with a checkpoint of
    that iteration; registered last, so that the other hooks (LR schedule, periodic checkpoint,
    metrics) have finished the iteration."""

    def before_train(self):
        _state.iteration = self.trainer.start_iter
        _state.phase = "training" if _state.pid == os.getpid() else _state.phase

    def before_step(self):
        _state.iteration = self.trainer.iter

    def after_step(self):
        trainer = self.trainer
        iteration, last = trainer.iter, trainer.iter + 1 >= trainer.max_iter
        requested = _agree(_state.requested)
        if not requested:
            if last:
                _state.phase = "finishing"
            return
        _state.phase = "stopping"  # a second signal now stops at once
        checkpointer = trainer.checkpointer
        period = trainer.cfg.SOLVER.CHECKPOINT_PERIOD
        if last:
            name = "model_final"  # the periodic checkpointer wrote it in this iteration
        else:
            name = f"model_{iteration:07d}"
            if (iteration + 1) % period != 0:  # else the periodic checkpointer just wrote it
                logger.info(f"{signal_name(requested)} received: writing the checkpoint of iteration "
                            f"{iteration + 1} before stopping")
                checkpointer.save(name, iteration=iteration)
        comm.synchronize()  # no process ends before the checkpoint is complete
        path = os.path.join(checkpointer.save_dir, f"{name}.pth")
        raise StopRequested(
            requested, f"after iteration {iteration + 1} of {trainer.max_iter}; {path} is written and "
            "last_checkpoint names it", resumable=True, agreed=True)
