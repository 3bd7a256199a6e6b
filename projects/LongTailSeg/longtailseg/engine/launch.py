"""``launch`` that also runs several processes without CUDA, and reports the failure that matters.

Detectron2 v0.6's ``launch`` asserts CUDA and uses NCCL. With CUDA this module calls it
unchanged; without CUDA and ``num_gpus_per_machine > 1`` it starts that many CPU worker
processes joined by a gloo process group, so the same ``--num-gpus N`` command works on a
laptop or CI (useful to check multi-process evaluation and gradient averaging).

When one CPU process fails, the others lose their connection to it and fail too ("Connection
closed by peer"), and whichever failure ``torch.multiprocessing`` happens to see first was shown.
Each process therefore records its failure with a time stamp; ``launch`` raises the root cause:
a LongTailSeg error (one line, naming the cause) if any process had one, else the earliest
failure with its traceback. ``torch.multiprocessing`` stops the other processes as soon as one
exits with an error.
"""
import contextlib
import functools
import gc
import json
import logging
import os
import shutil
import tempfile
import time
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import detectron2.engine.defaults as detectron2_defaults
from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

from ..errors import LongTailSegError, one_line

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)


class WorkerProcessError(RuntimeError):
    """A CPU worker process failed with an error that is not a LongTailSeg one; the message holds
    that process's traceback."""


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None,
           args=(), timeout=DEFAULT_TIMEOUT):
    """Same arguments as ``detectron2.engine.launch``."""
    if torch.cuda.is_available() or num_gpus_per_machine * num_machines <= 1:
        return detectron2_launch(main_func, num_gpus_per_machine, num_machines, machine_rank,
                                 dist_url, args=args, timeout=timeout)
    if num_machines != 1:
        raise ValueError("CPU processes run on one machine only; pass --num-machines 1")
    if not dist_url or dist_url == "auto":
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    failures = tempfile.mkdtemp(prefix="longtailseg-failures-")
    try:
        mp.spawn(_cpu_worker, nprocs=num_gpus_per_machine, daemon=False,
                 args=(main_func, num_gpus_per_machine, dist_url, args, timeout, failures))
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
        _raise_root_cause(failures, e)
        raise
    finally:
        shutil.rmtree(failures, ignore_errors=True)


def _cpu_worker(rank, main_func, world_size, dist_url, args, timeout, failures):
    try:
        dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                                rank=rank, timeout=timeout)
        # Detectron2's get_local_rank / get_local_size read this group; all ranks are on this machine.
        assert comm._LOCAL_PROCESS_GROUP is None
        comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
        comm.synchronize()
        main_func(*args)
    except BaseException as e:
        _record_failure(failures, rank, e)
        # No teardown: the other processes may wait in a collective; the parent stops them.
        raise
    comm.synchronize()  # every process is done with its peers before any closes its connections
    _release_process_groups()


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


def _record_failure(folder, rank, error):
    record = {"rank": rank, "time": time.time(), "ours": isinstance(error, LongTailSegError),
              "message": one_line(error), "traceback": traceback.format_exc()}
    path = os.path.join(folder, f"rank{rank}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)


def _raise_root_cause(folder, spawn_error):
    """Raise the failure that caused the others: a LongTailSeg error if any process had one, else
    the earliest; nothing when no process recorded one (e.g. killed by a signal)."""
    records = []
    for name in os.listdir(folder):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                records.append(json.load(f))
    if not records:
        return
    ours = [r for r in records if r["ours"]]
    first = min(ours or records, key=lambda r: r["time"])
    if first["ours"]:
        raise LongTailSegError(first["message"]) from None
    raise WorkerProcessError(
        f"process {first['rank']} failed first ({len(records)} processes failed):\n{first['traceback']}"
    ) from spawn_error


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
