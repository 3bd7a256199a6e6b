#!/usr/bin/env python
"""Time (and peak memory) of the long-tail losses relative to plain cross-entropy.

    python tools/benchmark_losses.py [--shape 2 150 128 128] [--repeats 20] [--threads 2]

Each variant runs forward + backward on the same random logits and labels (5 % ignore pixels)
on the CPU; the table gives the median time over --repeats runs after two warm-up runs, the
peak memory one run adds (measured in a fresh process), and both relative to CE.
"""
import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import time

import torch

from longtailseg.longtail.calibration import generalized_reweighting
from longtailseg.longtail.losses import build_loss
from longtailseg.longtail.variation import LogitVariation
from tabulate import tabulate


def variants(num_classes):
    counts = torch.logspace(6, 2, num_classes).tolist()  # a steep long tail
    ce = build_loss("CE")
    blv = LogitVariation(counts, sigma=4.0).train()
    weights = generalized_reweighting(counts, 0.2)
    return {
        "CE": lambda z, y: ce(z, y),
        "BLV + CE": lambda z, y: ce(blv(z), y),
        "GRW CE": lambda z, y: ce(z, y, class_weights=weights),
        "BLV + GRW CE": lambda z, y: ce(blv(z), y, class_weights=weights),
    }


def _resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_memory_of_one_step(name, shape, threads):
    """Runs in a fresh process: peak resident memory added by one forward + backward.

    Large CPU tensors are separate mmap allocations that glibc returns to the system when freed,
    so the process's peak resident size (ru_maxrss) above the size before the step is the step's
    peak of live tensor memory.
    """
    torch.set_num_threads(threads)
    logits, labels = make_inputs(shape)
    loss_fn = variants(shape[1])[name]
    before = _resident_bytes()
    z = logits.clone().requires_grad_(True)
    loss_fn(z, labels).backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def make_inputs(shape):
    n, c, h, w = shape
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, h, w, generator=g)
    labels = torch.randint(0, c, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < 0.05] = 255
    return logits, labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 150, 128, 128], metavar=("N", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    c = args.shape[1]
    logits, labels = make_inputs(args.shape)
    spawn = multiprocessing.get_context("spawn")

    rows, baseline = [], None
    for name, loss_fn in variants(c).items():
        def step():
            z = logits.clone().requires_grad_(True)
            loss_fn(z, labels).backward()

        for _ in range(2):
            step()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        with spawn.Pool(1) as pool:
            peak = pool.apply(_peak_memory_of_one_step, (name, tuple(args.shape), args.threads))
        baseline = baseline or (median, peak)
        rows.append([name, f"{1000 * median:.1f}", f"{100 * (median / baseline[0] - 1):+.1f}%",
                     f"{peak / 2**20:.0f}", f"{peak / baseline[1]:.2f}x"])
    print(f"logits {tuple(args.shape)} float32 on CPU, {args.threads} threads, forward + backward, "
          f"median of {args.repeats}")
    print(tabulate(rows, headers=["loss", "ms", "time vs CE", "peak MiB", "memory vs CE"], tablefmt="pipe"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
