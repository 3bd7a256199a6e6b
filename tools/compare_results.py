#!/usr/bin/env python
r"""Side-by-side table of semantic-segmentation results of several runs.

    python tools/compare_results.py output/synthetic/deeplab_v3_plus output/synthetic/blv_deeplab \
        [--dataset synthetic_ade_sem_seg_val] [--names CE BLV]

Each argument is an OUTPUT_DIR (its ``inference/<dataset>/sem_seg_results.json`` is read) or a
results JSON. ``--uniform`` adds the head / body / tail numbers of the uniform test setting
(``TEST.UNIFORM.ENABLED``); the parameter count comes from the run's log.txt where there is one. Columns: mIoU and mACC over all classes and per head / body / tail group, pACC
and the Dice error (1 - mean Dice, as in the PAT paper).
"""
import argparse
import glob
import json
import os
import re
import sys

from tabulate import tabulate

GROUPS = ("head", "body", "tail")


def find_results(path, dataset=None):
    if os.path.isfile(path):
        return path
    pattern = os.path.join(path, "inference", dataset or "*", "sem_seg_results.json")
    matches = sorted(glob.glob(pattern))
    if not matches:
        raise FileNotFoundError(f"no {pattern}; train or evaluate that run first")
    return matches[0]


def parameter_count(run):
    """The last "model parameters: N" that tools/train_net.py logged in the run's folder."""
    log = os.path.join(run, "log.txt")
    if not os.path.isfile(log):
        return "n/a"
    with open(log) as f:
        counts = re.findall(r"model parameters: ([\d,]+)", f.read())
    return counts[-1] if counts else "n/a"


def row(name, results, params, uniform=False):
    sem_seg = results["sem_seg"]

    def fmt(key):
        value = sem_seg.get(key)
        return "n/a" if value is None else f"{value:.2f}"

    cells = [name, params, fmt("mIoU"), fmt("mACC")] + [fmt(f"mIoU-{g}") for g in GROUPS] + \
        [fmt(f"mACC-{g}") for g in GROUPS] + [fmt("pACC")] + \
        ["n/a" if sem_seg.get("DiceErr") is None else f"{sem_seg['DiceErr']:.3f}"]
    if uniform:
        cells += [fmt(f"{m}-{g}-uniform") for m in ("mIoU", "mACC") for g in GROUPS]
    return cells


def add_run_arguments(parser, runs_help):
    """The arguments of both comparison tools (this one and compare_lvis_results.py)."""
    parser.add_argument("runs", nargs="+", help=runs_help)
    parser.add_argument("--dataset", help="evaluation dataset folder under inference/ (default: the first)")
    parser.add_argument("--names", nargs="*", help="row names (default: the run folders' names)")


def run_names(args):
    """One row name per run, or None (the error printed) when --names does not match the runs."""
    names = args.names or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(names) != len(args.runs):
        print("error: give one --names entry per run", file=sys.stderr)
        return None
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "OUTPUT_DIRs or sem_seg_results.json files")
    parser.add_argument("--uniform", action="store_true", help="add the uniform test setting's group numbers")
    args = parser.parse_args(argv)
    names = run_names(args)
    if names is None:
        return 2
    rows = []
    for name, run in zip(names, args.runs):
        try:
            with open(find_results(run, args.dataset)) as f:
                rows.append(row(name, json.load(f), parameter_count(run), args.uniform))
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    headers = ["run", "params", "mIoU", "mACC"] + [f"mIoU-{g}" for g in GROUPS] + [f"mACC-{g}" for g in GROUPS] + ["pACC", "Dice err"]
    if args.uniform:
        headers += [f"{m}-{g} unif." for m in ("mIoU", "mACC") for g in GROUPS]
    print(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
