"""A run folder belongs to one run: what a training may do to the OUTPUT_DIR it is given.

Detectron2 writes into OUTPUT_DIR whatever is there, so a re-run without ``--resume``, a lost
``last_checkpoint``, a second stage pointed at its stage 1's folder or two trainings started into
one folder overwrote checkpoints without a word. Before anything is written (``setup``, main
process), a training here

* holds ``OUTPUT_DIR/run.lock`` (``RunLock``: a POSIX record lock plus the holder's PID, host and
  start time) while it runs; a second training is refused naming the first's PID; a lock left by a
  process no longer alive on this host is taken over with a warning (one of another host is not:
  whether it lives cannot be told). ``tools/train_net.py`` takes
  it in the launching process, so that ``--num-gpus N`` workers share it; ``setup`` takes it when
  nobody did (one's own script);
* is refused, without ``--resume``, when OUTPUT_DIR holds another run's checkpoints, unless
  ``RUN.OVERWRITE True`` (which deletes them, and that run's metrics.json, first);
* with ``--resume`` and checkpoints but no usable ``last_checkpoint`` (missing, empty, naming a
  missing file or a folder) resumes from the newest checkpoint that loads, and says so;
* with ``--resume`` is refused when its config differs from the run's ``config.yaml`` in anything
  but the schedule length (:data:`MAY_CHANGE_ON_RESUME`);
* as a second stage, is refused when OUTPUT_DIR is the folder of the weights it reads;
* is refused when a folder stands where it would write a checkpoint (it would stop at that save).

``--eval-only`` takes no lock and may share a training's folder (it writes OUTPUT_DIR/inference),
but keeps that training's ``config.yaml``; ``--eval-only --resume`` with MODEL.WEIGHTS also given
on the command line is refused when ``last_checkpoint`` names another file (which one to evaluate
is ambiguous: Detectron2 would silently take ``last_checkpoint``'s).
"""
import atexit
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import time

import torch
import yaml

from detectron2.utils import comm

from ..errors import LongTailSegError, one_line
from ..io import write_text_atomically
from ..safe_files import load_yaml
from . import stage2
from .checkpoint import LongTailCheckpointer, check_output_dir

logger = logging.getLogger("longtailseg")

LOCK_NAME = "run.lock"
CHECKPOINT_NAME = re.compile(r"^model_(\d+|final)\.pth$")
# What --resume may change: the schedule's length (a longer run moves its steps, evaluates and
# saves at other periods) and bookkeeping that does not change what is trained (where the folder
# is, the initial weights a resume does not load, the resolved class-statistics path, this node).
MAY_CHANGE_ON_RESUME = ("SOLVER.MAX_ITER", "SOLVER.STEPS", "SOLVER.CHECKPOINT_PERIOD", "TEST.EVAL_PERIOD",
                        "OUTPUT_DIR", "MODEL.WEIGHTS", "MODEL.LONG_TAIL.CLASS_STATS", "RUN.OVERWRITE")
_SCHEDULE = ", ".join(MAY_CHANGE_ON_RESUME[:4])


class RunFolderError(LongTailSegError, ValueError):
    """OUTPUT_DIR belongs to another run (checkpoints, a live lock, the stage-1 weights, another
    config), or what --resume / --eval-only should load is missing or ambiguous."""


# ------------------------------------------------------------------------------------------ lock

def _start_time(pid):
    """(state, start time in clock ticks) of ``pid`` from /proc (Linux), or None: a recorded start
    time tells a reused PID from the lock's holder."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(record):
    """True / False whether the lock's holder runs; None when it is on another host (unknown)."""
    if record.get("host") != socket.gethostname():
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    stat = _start_time(pid)
    if stat is None:
        return True
    state, start = stat
    return state != "Z" and record.get("start_time") in (None, start)


class RunLock:
    """``OUTPUT_DIR/run.lock``, locked with ``fcntl.lockf`` and naming its holder, so that a refusal
    can say whose run it is. A POSIX lock belongs to the process: the kernel drops it when the
    process dies (kill -9 too), and forked data-loader workers do not inherit it. It is dropped as
    well when the process closes any descriptor of the file, so the holder reads the file only
    through its own. Also refuses when the file names a live process on this host, or a process
    on another host, that holds no lock (a file system where locks do nothing): only a dead
    process's lock on this host is stale."""

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self.fd = None
        self.owner = None
        self.record = None

    def acquire(self):
        if os.path.realpath(self.output_dir) in _HELD:  # a second lock would drop the first's on release
            return _HELD[os.path.realpath(self.output_dir)]
        check_output_dir(self.output_dir)  # a folder we can write; one-line errors
        for _ in range(40):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = _read_record(self.path)
                if holder and _alive(holder) is not False:
                    raise RunFolderError(_busy(self.output_dir, self.path, holder)) from None
                time.sleep(0.05)  # the new holder has not written its name yet
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released (unlinked) between our open and our lock: try the new file
                os.close(fd)
                continue
            previous = _parse(os.pread(fd, 1 << 16, 0))
            # A named holder that no lock backs: a file system where locks do nothing, or another
            # host's run (whose liveness cannot be told from here).
            if previous and previous.get("pid") != os.getpid() and _alive(previous) is not False:
                os.close(fd)
                raise RunFolderError(_busy(self.output_dir, self.path, previous))
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "start_time": (_start_time(os.getpid()) or (None, None))[1],
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            if previous and previous.get("pid") != os.getpid():
                record["took_over"] = {k: previous.get(k) for k in ("pid", "host", "started")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            os.fsync(fd)
            self.fd, self.owner, self.record = fd, os.getpid(), record
            _HELD[os.path.realpath(self.output_dir)] = self
            return self
        raise RunFolderError(_busy(self.output_dir, self.path, _read_record(self.path) or {}))

    def release(self):
        """Remove the lock file and drop the lock; only in the process that took it."""
        if self.fd is None or os.getpid() != self.owner:
            return
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None
            _HELD.pop(os.path.realpath(self.output_dir), None)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


_HELD = {}  # realpath(OUTPUT_DIR) -> the RunLock this process holds


def _parse(data):
    try:
        record = json.loads(data or b"null")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _read_record(path):
    """The lock file's record, read by a process that does not hold it (see ``RunLock``)."""
    try:
        with open(path, "rb") as f:
            return _parse(f.read())
    except OSError:
        return None


def _busy(output_dir, path, holder):
    who = f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
    if _alive(holder) is None and holder:
        fix = f"wait for it to end, or if it has ended delete {path}; or set OUTPUT_DIR to another folder"
    else:
        fix = "wait for it to end, or set OUTPUT_DIR to another folder"
    return f"OUTPUT_DIR {output_dir} is in use by another training ({who}; lock {path}); {fix}"


def lock_for(cfg, args):
    """The lock a training of ``args`` holds on ``cfg.OUTPUT_DIR`` (``with`` it around the launch);
    nothing for --eval-only, or on machines other than the first."""
    if args.eval_only or getattr(args, "machine_rank", 0) != 0:
        return contextlib.nullcontext()
    return RunLock(cfg.OUTPUT_DIR)


def _hold(output_dir):
    """(the lock's record, the RunLock taken here or None): OUTPUT_DIR's lock is taken unless this
    process or its launcher (``--num-gpus N``) holds it; taken here it lasts until the process
    exits."""
    held = _HELD.get(os.path.realpath(output_dir))
    if held is not None:
        return held.record, None
    record = _read_record(os.path.join(output_dir, LOCK_NAME))
    if record and record.get("pid") == os.getppid() and record.get("host") == socket.gethostname():
        return record, None
    lock = RunLock(output_dir).acquire()
    atexit.register(lock.release)
    return lock.record, lock


# ------------------------------------------------------------------------------------ checkpoints

def checkpoints(output_dir):
    """The checkpoint files (model_NNNNNNN.pth, model_final.pth) in ``output_dir``, sorted."""
    try:
        return sorted(n for n in os.listdir(output_dir)
                      if CHECKPOINT_NAME.match(n) and os.path.isfile(os.path.join(output_dir, n)))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _last_checkpoint_problem(output_dir):
    """Why OUTPUT_DIR/last_checkpoint cannot be resumed from ("" when it can; None when absent)."""
    path = os.path.join(output_dir, "last_checkpoint")
    if not os.path.lexists(path):
        return None
    if os.path.isdir(path):
        return "is a folder"
    try:
        with open(path) as f:
            name = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot be read ({getattr(e, 'strerror', None) or type(e).__name__})"
    if not name:
        return "is empty"
    target = os.path.join(output_dir, name)
    if os.path.isdir(target):
        return f"names {name}, a folder"
    if not os.path.isfile(target):
        return f"names {name}, which does not exist"
    return ""


def _iteration(data):
    iteration = data.get("iteration")
    if iteration is None and isinstance(data.get("trainer"), dict):
        iteration = data["trainer"].get("iteration")
    return iteration if isinstance(iteration, int) else None


def _read_checkpoint(path):
    """(iteration or None, "") when the project's checkpointer reads ``path`` as a checkpoint with
    weights, else (None, why not)."""
    try:
        data = LongTailCheckpointer(torch.nn.Module())._load_file(path)
    except LongTailSegError as e:
        return None, one_line(e)
    if not isinstance(data, dict) or not data.get("model"):
        return None, f"{path} holds no weights"
    return _iteration(data), ""


def newest_valid_checkpoint(output_dir):
    """(name, [why each newer one was skipped]) of the newest checkpoint in ``output_dir`` that
    loads: by the iteration in its name, model_final.pth by the iteration it holds (it is newer
    than the periodic checkpoints of its run, older than those of a longer resumed run)."""
    names = checkpoints(output_dir)
    ordered = [(int(CHECKPOINT_NAME.match(n).group(1)), n) for n in names if n != "model_final.pth"]
    skipped = []
    if "model_final.pth" in names:
        iteration, why = _read_checkpoint(os.path.join(output_dir, "model_final.pth"))
        if why:
            skipped.append(why)
        else:
            ordered.append((float("inf") if iteration is None else iteration + 0.5, "model_final.pth"))
    for _, name in sorted(ordered, reverse=True):
        if name == "model_final.pth":
            return name, skipped
        why = _read_checkpoint(os.path.join(output_dir, name))[1]
        if not why:
            return name, skipped
        skipped.append(why)
    return None, skipped


# -------------------------------------------------------------------------------------- configs

def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(cfg, saved_path):
    """Keys (in config order) whose value in ``cfg`` differs from the config.yaml at
    ``saved_path``, but for :data:`MAY_CHANGE_ON_RESUME`; keys only one side has are not compared
    (a key added by a newer version)."""
    saved = load_yaml(saved_path)
    if not isinstance(saved, dict):
        raise RunFolderError(f"{saved_path} holds a {type(saved).__name__}, not a config; it is not the "
                             "config.yaml training writes: restore it, or set OUTPUT_DIR to a new folder")
    saved, current = _flatten(saved), _flatten(yaml.safe_load(cfg.dump()))
    differ = []
    for key, value in current.items():
        if key in saved and key not in MAY_CHANGE_ON_RESUME and saved[key] != value:
            differ.append((key, saved[key], value))
    stats = "MODEL.LONG_TAIL.CLASS_STATS"
    if current.get(stats) and saved.get(stats) and \
            os.path.realpath(current[stats]) != os.path.realpath(saved[stats]):
        differ.append((stats, saved[stats], current[stats]))
    return differ


# --------------------------------------------------------------------------------------- checks

def _on_command_line(args, key):
    return key in list(args.opts or [])[::2]


def prepare(cfg, args):
    """Check (and hold) OUTPUT_DIR for the run ``args`` asks for, on the main process, before
    anything is written: the module docstring's rules. Returns what to log once the log is set up
    (call its ``finish``)."""
    if not comm.is_main_process():
        return _Notes(cfg.OUTPUT_DIR, [])
    if args.eval_only:
        return _check_evaluation(cfg, args)
    _check_stage2_folder(cfg)
    record, taken = _hold(cfg.OUTPUT_DIR)
    try:
        return _check_training(cfg, args, record)
    except BaseException:
        if taken is not None:
            taken.release()
        raise


def _check_stage2_folder(cfg):
    weights, out = cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR
    # A missing file has nothing to overwrite (check_stage1_weights says how to make it).
    if stage2.is_stage2(cfg) and weights and os.path.isfile(weights) and \
            os.path.realpath(os.path.dirname(weights) or ".") == os.path.realpath(out):
        raise RunFolderError(
            f"stage 2 would write its checkpoints into OUTPUT_DIR {out}, the folder of the stage-1 "
            f"weights it reads (MODEL.WEIGHTS {weights}), and overwrite them; set OUTPUT_DIR to a "
            "new folder for stage 2")


def _check_evaluation(cfg, args):
    out = cfg.OUTPUT_DIR
    last = os.path.join(out, "last_checkpoint")
    problem = _last_checkpoint_problem(out)
    if args.resume and problem:
        raise RunFolderError(
            f"--eval-only --resume evaluates the checkpoint {last} names, but it {problem}; drop "
            "--resume and set MODEL.WEIGHTS to the checkpoint to evaluate")
    if args.resume and problem == "" and _on_command_line(args, "MODEL.WEIGHTS"):
        with open(last) as f:
            named = f.read().strip()
        if os.path.realpath(os.path.join(out, named)) != os.path.realpath(cfg.MODEL.WEIGHTS):
            raise RunFolderError(
                f"--eval-only --resume evaluates {named} (named by {last}), but MODEL.WEIGHTS "
                f"{cfg.MODEL.WEIGHTS} was given too; drop --resume to evaluate MODEL.WEIGHTS, or "
                "drop MODEL.WEIGHTS to evaluate the last checkpoint")
    return _Notes(out, [], keep_config=problem is not None or bool(checkpoints(out)))


def _check_training(cfg, args, record):
    out = cfg.OUTPUT_DIR
    notes = []
    if record.get("took_over"):
        old = record["took_over"]
        notes.append((logging.WARNING, f"took over the lock {os.path.join(out, LOCK_NAME)} of PID "
                      f"{old.get('pid')} on {old.get('host')} (started {old.get('started')}), which no "
                      "longer runs"))
    folders = [n for n in os.listdir(out) if (CHECKPOINT_NAME.match(n) or n == "last_checkpoint")
               and os.path.isdir(os.path.join(out, n))]
    if folders:
        raise RunFolderError(
            f"{os.path.join(out, folders[0])} is a folder where training writes a checkpoint file; move "
            "it out of OUTPUT_DIR (or set OUTPUT_DIR to a new folder)")
    problem = _last_checkpoint_problem(out)
    found = (["last_checkpoint"] if problem is not None else []) + sorted(checkpoints(out), reverse=True)  # final first
    if not found:
        return _Notes(out, notes)
    if not args.resume:
        if not cfg.RUN.OVERWRITE:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
            raise RunFolderError(
                f"OUTPUT_DIR {out} holds another run's checkpoints ({shown}); add --resume to continue "
                "that run, set OUTPUT_DIR to a new folder, or add RUN.OVERWRITE True to delete them "
                "and start again")
        notes.append((logging.WARNING, _overwrite(out, found)))
        return _Notes(out, notes)
    last = os.path.join(out, "last_checkpoint")
    if problem is None:
        problem = "is missing"
    if problem:
        name, skipped = newest_valid_checkpoint(out)
        why = f"; skipped: {'; '.join(skipped)}" if skipped else ""
        if name is None:
            held = ", ".join(checkpoints(out)) or "no model_*.pth"
            raise RunFolderError(
                f"--resume: {last} {problem} and no checkpoint in {out} can be resumed from ({held}{why}); "
                f"delete {last} and the damaged checkpoints to start again, or set OUTPUT_DIR to a new folder")
        write_text_atomically(name, last)
        notes.append((logging.WARNING, f"--resume: {last} {problem}; resuming from {name}, the newest "
                      f"checkpoint in {out} that loads (last_checkpoint now names it){why}"))
    saved = os.path.join(out, "config.yaml")
    if not os.path.isfile(saved):
        notes.append((logging.WARNING, f"--resume: {saved} is missing, so this config could not be "
                      "compared with the run's"))
        return _Notes(out, notes)
    differ = config_differences(cfg, saved)
    if differ:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} here" for k, a, b in differ[:3])
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        raise RunFolderError(
            f"--resume: this config differs from the run's {saved} in {shown}{more}; resume with the "
            f"run's config (--config-file {saved} OUTPUT_DIR {out}), or train this config into a new "
            f"OUTPUT_DIR (only {_SCHEDULE} may change on resume)")
    return _Notes(out, notes)


def _overwrite(out, found):
    """RUN.OVERWRITE: delete the previous run's checkpoints (and its metrics.json, which the new run
    would append to) before anything is written; what was deleted, for the log."""
    deleted = found + (["metrics.json"] if os.path.isfile(os.path.join(out, "metrics.json")) else [])
    for name in deleted:
        os.remove(os.path.join(out, name))
    return f"RUN.OVERWRITE True: deleted the previous run's {', '.join(deleted)} in {out}"


class _Notes:
    """What ``prepare`` found, logged by ``finish`` once the log is set up; for --eval-only into a
    training's folder also that training's config.yaml, put back after Detectron2 wrote the
    evaluation's (a later --resume compares against it)."""

    def __init__(self, output_dir, notes, keep_config=False):
        self.notes = notes
        self.config_path = os.path.join(output_dir, "config.yaml")
        self.config = None
        if keep_config and os.path.isfile(self.config_path):
            with open(self.config_path) as f:
                self.config = f.read()

    def finish(self):
        for level, message in self.notes:
            logger.log(level, message)
        if self.config is not None:
            write_text_atomically(self.config, self.config_path)
            logger.info(f"--eval-only: kept the training's {self.config_path} (the evaluation's config "
                        "is in log.txt)")
