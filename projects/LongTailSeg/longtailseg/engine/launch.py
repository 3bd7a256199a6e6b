"""``launch`` that also runs several processes without CUDA.

Detectron2 v0.6's ``launch`` asserts CUDA and uses NCCL. With CUDA this module calls it
unchanged; without CUDA and ``num_gpus_per_machine > 1`` it starts that many CPU worker
processes joined by a gloo process group, so the same ``--num-gpus N`` command works on a
laptop or CI (useful to check multi-process evaluation and gradient averaging).
"""
import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)


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
    mp.spawn(_cpu_worker, nprocs=num_gpus_per_machine,
             args=(main_func, num_gpus_per_machine, dist_url, args, timeout), daemon=False)


def _cpu_worker(rank, main_func, world_size, dist_url, args, timeout):
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                            rank=rank, timeout=timeout)
    # Detectron2's get_local_rank / get_local_size read this group; all ranks are on this machine.
    assert comm._LOCAL_PROCESS_GROUP is None
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
