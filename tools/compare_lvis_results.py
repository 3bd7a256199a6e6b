#!/usr/bin/env python
r"""Side-by-side table of LVIS instance-segmentation results of several runs.

    python tools/compare_lvis_results.py output/synthetic/mask_rcnn_baseline \
        output/synthetic/mask_rcnn_cosine ... [--names baseline cosine ...] [--dataset NAME]

Each argument is an OUTPUT_DIR. Its results are read from
``inference/<dataset>/lvis_results.json`` (written by the trainer's LVIS evaluator), else from
the last evaluation in ``metrics.json``. Columns: AP, APr, APc, APf of segm and bbox; seconds per
training iteration (the mean of Detectron2's ``time`` in metrics.json, the first record, the
warm-up, left out), its overhead over the first run, iterations and total training seconds.
A DisAlign row's time is its stage 2 only: the model also cost its stage 1.
"""
import argparse
import glob
import json
import os
import sys

from compare_results import add_run_arguments, run_names  # tools/ is on sys.path when run
from tabulate import tabulate

METRICS = ("AP", "APr", "APc", "APf")
TASKS = ("segm", "bbox")


def read_metrics(run):
    path = os.path.join(run, "metrics.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_results(run, dataset=None):
    """{task: {metric: value}} of a run's final evaluation."""
    pattern = os.path.join(run, "inference", dataset or "*", "lvis_results.json")
    matches = sorted(glob.glob(pattern))
    if matches:
        with open(matches[0]) as f:
            return json.load(f)
    for record in reversed(read_metrics(run)):
        if any(k.startswith("segm/") or k.startswith("bbox/") for k in record):
            return {task: {m: record[f"{task}/{m}"] for m in METRICS if f"{task}/{m}" in record}
                    for task in TASKS}
    raise FileNotFoundError(f"no {pattern} and no evaluation in {run}/metrics.json; "
                            "train or evaluate that run first")


def iteration_time(run):
    """(mean seconds per iteration, iterations) from metrics.json, or (None, None)."""
    records = [r for r in read_metrics(run) if "time" in r]
    if not records:
        return None, None
    times = [r["time"] for r in (records[1:] or records)]
    return sum(times) / len(times), records[-1]["iteration"] + 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "OUTPUT_DIRs; the first is the reference for the overhead")
    args = parser.parse_args(argv)
    names = run_names(args)
    if names is None:
        return 2
    rows, reference = [], None
    for name, run in zip(names, args.runs):
        try:
            results = read_results(run, args.dataset)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        seconds, iterations = iteration_time(run)
        if reference is None:
            reference = seconds
        overhead = (f"{100 * (seconds / reference - 1):+.1f}%" if seconds and reference else "n/a")
        values = [_fmt(results.get(task, {}).get(m)) for task in TASKS for m in METRICS]
        rows.append([name] + values + [
            "n/a" if seconds is None else f"{seconds:.3f}", overhead,
            "n/a" if iterations is None else iterations,
            "n/a" if seconds is None else f"{seconds * iterations:.0f}",
        ])
    headers = (["run"] + [f"{task} {m}" for task in TASKS for m in METRICS]
               + ["s/iter", "vs first", "iters", "train s"])
    print(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
    return 0


def _fmt(value):
    # LVISEvaluator reports -100 (LVIS's -1) for a group without categories to evaluate
    return "n/a" if value is None or value != value or value < 0 else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
