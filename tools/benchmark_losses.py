#!/usr/bin/env python
"""Time (and peak memory) of every loss of the registry, and of BLV / GRW, relative to CE.

    python tools/benchmark_losses.py [--shape 2 150 128 128] [--repeats 20] [--threads 2]
    python tools/benchmark_losses.py --shape 2 19 64 64 --repeats 5    # a quick look

Each variant runs forward + backward on the same random logits and labels (5 % ignore pixels)
on the CPU, the variants in turn; the table gives the median time over --repeats runs after two
warm-up runs, the peak memory one run adds (measured in a fresh process), and both relative to CE.
"""
import argparse
import multiprocessing
import statistics
import sys

import torch

from longtailseg.engine.timing import reset_peak_rss, round_robin_times, status_bytes
from longtailseg.longtail.calibration import generalized_reweighting
from longtailseg.longtail.losses import LOSS_REGISTRY, build_loss, loss_needs_class_counts
from longtailseg.longtail.variation import LogitVariation
from tabulate import tabulate
from tqdm import tqdm


def variants(num_classes):
    """Every loss of the registry with its config defaults, then BLV and GRW on CE."""
    counts = torch.logspace(6, 2, num_classes).tolist()  # a steep long tail
    out = {}
    for name, _ in LOSS_REGISTRY:
        loss = build_loss(name, class_counts=counts if loss_needs_class_counts(name) else None,
                          **BENCHMARK_OPTIONS.get(name, {}))
        out[name] = loss
    ce = out["CE"]
    blv = LogitVariation(counts, sigma=4.0).train()
    weights = generalized_reweighting(counts, 0.2)
    out["BLV + CE"] = lambda z, y: ce(blv(z), y)
    out["GRW CE"] = lambda z, y: ce(z, y, class_weights=weights)
    out["BLV + GRW CE"] = lambda z, y: ce(blv(z), y, class_weights=weights)
    return out


# Options as the synthetic configs use them (LDAM on a linear classifier, PAT's constant).
BENCHMARK_OPTIONS = {"LDAM": dict(scale=1.0), "PAT": dict(constant=3.0)}


def _peak_memory_of_one_step(name, shape, threads):
    """Runs in a fresh process: peak resident memory added by one forward + backward.

    Large CPU tensors are separate mmap allocations that glibc returns to the system when freed,
    so the peak resident size during the step above the size before it is the step's peak of
    live tensor memory. The peak is the process's own high-water mark (VmHWM), reset before the
    step where the kernel allows (clear_refs 5); ru_maxrss is not used: Linux carries it over
    from the parent across fork + exec, so it would include the benchmark process's memory.
    """
    torch.set_num_threads(threads)
    logits, labels = make_inputs(shape)
    loss_fn = variants(shape[1])[name]
    # Where the mark cannot be reset it includes start-up, which is below a large step's peak.
    reset_peak_rss()
    before = status_bytes("VmRSS")
    z = logits.clone().requires_grad_(True)
    loss_fn(z, labels).backward()
    return status_bytes("VmHWM") - before


def make_inputs(shape):
    n, c, h, w = shape
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, h, w, generator=g)
    labels = torch.randint(0, c, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < 0.05] = 255
    return logits, labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 150, 128, 128], metavar=("N", "C", "H", "W"),
                        help="logits batch, classes, height, width (default: 2 150 128 128, ADE20K's "
                             "150 classes at 1/4 of a 512x512 crop)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed runs per variant; the table gives their median (default 20)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads, in the timing and the memory processes (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    c = args.shape[1]
    logits, labels = make_inputs(args.shape)
    spawn = multiprocessing.get_context("spawn")

    losses = variants(c)

    def step(loss_fn):
        z = logits.clone().requires_grad_(True)
        loss_fn(z, labels).backward()

    bar = dict(disable=args.no_progress, file=sys.stderr)
    # Round-robin over the variants, so that drifts of the machine (other processes, clock,
    # allocator state) fall on all of them alike rather than on whichever runs first.
    with tqdm(total=len(losses) * (2 + args.repeats), desc="warm-up and timing", unit="step", **bar) as progress:
        times = round_robin_times({name: (lambda f=loss_fn: step(f)) for name, loss_fn in losses.items()},
                                  repeats=args.repeats, warmup=2, progress=progress.update)

    rows, baseline = [], None
    for name in tqdm(losses, desc="peak memory (one process each)", unit="variant", **bar):
        median = statistics.median(times[name])
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
