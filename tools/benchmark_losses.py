#!/usr/bin/env python
"""Time (and peak memory) of the long-tail losses relative to plain cross-entropy.

    python tools/benchmark_losses.py [--shape 2 150 128 128] [--repeats 20] [--threads 2]

Each variant runs forward + backward on the same random logits and labels (5 % ignore pixels)
on the CPU; the table gives the median time over --repeats runs after two warm-up runs, the
peak memory the autograd profiler sees during one run, and both relative to CE.
"""
import argparse
import statistics
import sys
import time

import torch

from longtailseg.longtail.calibration import generalized_reweighting
from longtailseg.longtail.losses import get_loss
from longtailseg.longtail.variation import LogitVariation
from tabulate import tabulate


def variants(num_classes):
    counts = torch.logspace(6, 2, num_classes).tolist()  # a steep long tail
    ce = get_loss("CE")
    blv = LogitVariation(counts, sigma=4.0).train()
    weights = generalized_reweighting(counts, 0.2)
    return {
        "CE": lambda z, y: ce(z, y),
        "BLV + CE": lambda z, y: ce(blv(z), y),
        "GRW CE": lambda z, y: ce(z, y, class_weights=weights),
        "BLV + GRW CE": lambda z, y: ce(blv(z), y, class_weights=weights),
    }


def peak_memory_bytes(fn):
    """Peak of live CPU memory allocated by torch during ``fn()``, from the profiler's events."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live, peak = 0, 0
    events = sorted(
        (e for e in prof.events() if e.cpu_memory_usage != 0 and not e.cpu_children),
        key=lambda e: e.time_range.start,
    )
    for event in events:
        live += event.cpu_memory_usage
        peak = max(peak, live)
    return peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 150, 128, 128], metavar=("N", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, c, h, w = args.shape
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, h, w, generator=g)
    labels = torch.randint(0, c, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < 0.05] = 255

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
        peak = peak_memory_bytes(step)
        baseline = baseline or (median, peak)
        rows.append([name, f"{1000 * median:.1f}", f"{100 * (median / baseline[0] - 1):+.1f}%",
                     f"{peak / 2**20:.0f}", f"{peak / baseline[1]:.2f}x"])
    print(f"logits {tuple(args.shape)} float32 on CPU, {args.threads} threads, forward + backward, "
          f"median of {args.repeats}")
    print(tabulate(rows, headers=["loss", "ms", "time vs CE", "peak MiB", "memory vs CE"], tablefmt="pipe"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
