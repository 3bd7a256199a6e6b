#!/usr/bin/env python
"""Side-by-side table of semantic-segmentation results of several runs.

    python tools/compare_results.py output/synthetic/deeplab_v3_plus output/synthetic/blv_deeplab \
        [--dataset synthetic_ade_sem_seg_val] [--names CE BLV]

Each argument is an OUTPUT_DIR (its ``inference/<dataset>/sem_seg_results.json`` is read) or a
results JSON. Columns: mIoU and mACC over all classes and per head / body / tail group, pACC.
"""
import argparse
import glob
import json
import os
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


def row(name, results):
    sem_seg = results["sem_seg"]

    def fmt(key):
        value = sem_seg.get(key)
        return "n/a" if value is None else f"{value:.2f}"

    return [name, fmt("mIoU"), fmt("mACC")] + [fmt(f"mIoU-{g}") for g in GROUPS] + \
        [fmt(f"mACC-{g}") for g in GROUPS] + [fmt("pACC")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="OUTPUT_DIRs or sem_seg_results.json files")
    parser.add_argument("--dataset", help="evaluation dataset folder under inference/ (default: the first)")
    parser.add_argument("--names", nargs="*", help="row names (default: the run folders' names)")
    args = parser.parse_args(argv)
    names = args.names or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(names) != len(args.runs):
        print("error: give one --names entry per run", file=sys.stderr)
        return 2
    rows = []
    for name, run in zip(names, args.runs):
        try:
            with open(find_results(run, args.dataset)) as f:
                rows.append(row(name, json.load(f)))
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    headers = ["run", "mIoU", "mACC"] + [f"mIoU-{g}" for g in GROUPS] + [f"mACC-{g}" for g in GROUPS] + ["pACC"]
    print(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
