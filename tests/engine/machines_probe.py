"""What tests/engine/test_machines.py runs in each process of a multi-machine launch (importable by
the spawned processes): the ranks and groups Detectron2's ``comm`` sees, written as JSON."""
import json
import os
import sys

import torch
import torch.distributed as dist

from detectron2.utils import comm


def record_ranks(folder):
    # Sum of the global ranks in this process's local group: tells which processes it holds.
    ranks = torch.tensor([comm.get_rank()])
    dist.all_reduce(ranks, group=comm._LOCAL_PROCESS_GROUP)
    record = {"rank": comm.get_rank(), "world_size": comm.get_world_size(), "local_rank": comm.get_local_rank(),
              "local_size": comm.get_local_size(), "local_rank_sum": int(ranks.item()),
              "main": comm.is_main_process()}
    with open(os.path.join(folder, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":  # machines_probe.py FOLDER NUM_PROCESSES NUM_MACHINES MACHINE_RANK DIST_URL
    from longtailseg.engine.launch import launch

    folder, nprocs, nmachines, machine_rank, url = sys.argv[1:]
    launch(record_ranks, int(nprocs), num_machines=int(nmachines), machine_rank=int(machine_rank),
           dist_url=url, args=(folder,))
