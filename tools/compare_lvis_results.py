#!/usr/bin/env python
r"""Side-by-side table of LVIS instance-segmentation results of several runs, mean ± std over seeds.

    python tools/compare_lvis_results.py output/synthetic/mask_rcnn_baseline-seed{1,2,3} \
        output/synthetic/mask_rcnn_cosine-seed{1,2,3} --names baseline baseline baseline \
        cosine cosine cosine [--dataset NAME]

Each argument is an OUTPUT_DIR. Its results are read from
``inference/<dataset>/lvis_results.json`` (written by the trainer's LVIS evaluator), else from
the last evaluation in ``metrics.json``. Runs given the same ``--names`` entry are seeds of one
row (mean ± sample standard deviation; see compare_results.py). Columns: AP, APr, APc, APf of
segm and bbox; seconds per training iteration (the mean of Detectron2's ``time`` in
metrics.json, the first record, the warm-up, left out, averaged over the seeds), its overhead
over the first row, iterations and total training seconds. A DisAlign row's time is its stage 2
only: the model also cost its stage 1. A second table gives each row's AP differences to the
first row, marked ``*`` where larger than the two rows' standard deviations added.
"""
import argparse
import glob
import os
import sys

from tabulate import tabulate

from longtailseg.errors import LongTailSegError, UnreadableFileError, one_line
from longtailseg.evaluation.seed_summary import (add_run_arguments, check_seed_group, format_mean_std,
                                                 group_runs, mean_std, print_differences, run_names)
from longtailseg.safe_files import load_json, load_json_lines

METRICS = ("AP", "APr", "APc", "APf")
TASKS = ("segm", "bbox")


def read_metrics(run):
    path = os.path.join(run, "metrics.json")
    if not os.path.isfile(path):
        return []
    records = load_json_lines(path)
    if not all(isinstance(r, dict) for r in records):
        raise UnreadableFileError(f"{path} holds lines that are not metrics records; it is not the "
                                  "metrics.json training writes")
    return records


def read_results(run, dataset=None):
    """{task: {metric: value}} of a run's final evaluation."""
    pattern = os.path.join(run, "inference", dataset or "*", "lvis_results.json")
    matches = sorted(glob.glob(pattern))
    if matches:
        results = load_json(matches[0])
        if not isinstance(results, dict):
            raise UnreadableFileError(f"{matches[0]} holds a {type(results).__name__}, not LVIS results; "
                                      "evaluate the run again")
        return results
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


def ap_values(results, key):
    """One "task metric" column of every seed of a row; None where LVIS had nothing to evaluate."""
    task, metric = key.split(" ")
    values = [r.get(task, {}).get(metric) for r in results]
    # LVISEvaluator reports -100 (LVIS's -1) for a group without categories to evaluate
    return [None if v is None or v != v or v < 0 else v for v in values]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "OUTPUT_DIRs; runs given the same --names entry are seeds of one row, "
                              "the first row is the reference for the overhead")
    args = parser.parse_args(argv)
    names = run_names(args)
    if names is None:
        return 2
    columns = [f"{task} {m}" for task in TASKS for m in METRICS]
    groups, rows, reference = [], [], None
    try:
        for name, runs in group_runs(names, args.runs):
            check_seed_group(name, runs)
            groups.append((name, runs, [read_results(run, args.dataset) for run in runs],
                           [iteration_time(run) for run in runs]))
    except (FileNotFoundError, LongTailSegError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    for name, runs, results, timings in groups:
        seconds, _, _ = mean_std([s for s, _ in timings])
        iterations = timings[0][1]
        if reference is None:
            reference = seconds
        overhead = (f"{100 * (seconds / reference - 1):+.1f}%" if seconds and reference else "n/a")
        rows.append([name, len(runs)] + [format_mean_std(ap_values(results, c)) for c in columns] + [
            "n/a" if seconds is None else f"{seconds:.3f}", overhead,
            "n/a" if iterations is None else iterations,
            "n/a" if seconds is None or iterations is None else f"{seconds * iterations:.0f}",
        ])
    headers = ["run", "seeds"] + columns + ["s/iter", "vs first", "iters", "train s"]
    print(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
    print_differences([(name, results) for name, _, results, _ in groups], columns, ap_values)
    return 0


if __name__ == "__main__":
    sys.exit(main())
