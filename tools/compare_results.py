#!/usr/bin/env python
r"""Side-by-side table of semantic-segmentation results of several runs, mean ± std over seeds.

    python tools/compare_results.py output/synthetic/deeplab_v3_plus-seed{1,2,3} \
        output/synthetic/blv_deeplab-seed{1,2,3} --names CE CE CE BLV BLV BLV [--dataset NAME]

Each argument is an OUTPUT_DIR (its ``inference/<dataset>/sem_seg_results.json`` is read) or a
results JSON. Runs given the same ``--names`` entry are seeds of one experiment: they make one
row of mean ± sample standard deviation, and must not differ in config except SEED, OUTPUT_DIR,
MODEL.WEIGHTS and the class-statistics path. Columns: mIoU and mACC over all classes and per
head / body / tail group, pACC and the Dice error (1 - mean Dice, as in the PAT paper); the
parameter count comes from the first run's log.txt. ``--uniform`` adds the head / body / tail
numbers of the uniform test setting (``TEST.UNIFORM.ENABLED``). A second table gives each row's
difference to the first row, marked ``*`` where it is larger than the two rows' standard
deviations added.
"""
import argparse
import glob
import os
import re
import sys

from tabulate import tabulate

from longtailseg.errors import LongTailSegError, UnreadableFileError, one_line
from longtailseg.evaluation.seed_summary import (
    add_run_arguments,
    check_seed_group,
    format_mean_std,
    group_runs,
    print_differences,
    run_names,
)
from longtailseg.safe_files import load_json

GROUPS = ("head", "body", "tail")


def find_results(path, dataset=None):
    if os.path.isfile(path):
        return path
    pattern = os.path.join(path, "inference", dataset or "*", "sem_seg_results.json")
    matches = sorted(glob.glob(pattern))
    if not matches:
        raise FileNotFoundError(f"no {pattern}; train or evaluate that run first")
    return matches[0]


def read_results(run, dataset=None):
    """The sem_seg results JSON of a run (data only, see longtailseg.safe_files)."""
    path = find_results(run, dataset)
    results = load_json(path)
    if not isinstance(results, dict) or not isinstance(results.get("sem_seg"), dict):
        raise UnreadableFileError(f"{path} has no \"sem_seg\" results; it is not the "
                                  "sem_seg_results.json evaluation writes: evaluate the run again")
    return results


def parameter_count(run):
    """The last "model parameters: N" that tools/train_net.py logged in the run's folder."""
    log = os.path.join(run, "log.txt")
    if not os.path.isfile(log):
        return "n/a"
    with open(log, errors="replace") as f:
        counts = re.findall(r"model parameters: ([\d,]+)", f.read())
    return counts[-1] if counts else "n/a"


def metric_keys(uniform=False):
    """The sem_seg keys of the table, in column order."""
    keys = ["mIoU", "mACC"] + [f"mIoU-{g}" for g in GROUPS] + [f"mACC-{g}" for g in GROUPS] + ["pACC", "DiceErr"]
    if uniform:
        keys += [f"{m}-{g}-uniform" for m in ("mIoU", "mACC") for g in GROUPS]
    return keys


def seed_values(results, key):
    """One metric of every seed of a row (None where a run lacks it)."""
    return [r["sem_seg"].get(key) for r in results]


def row(name, results, params, uniform=False):
    """One table row: the mean ± std over the seeds' results of every column."""
    return [name, len(results), params] + [
        format_mean_std(seed_values(results, key), digits=3 if key == "DiceErr" else 2)
        for key in metric_keys(uniform)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "OUTPUT_DIRs or sem_seg_results.json files; runs given the same --names "
                              "entry are seeds of one row")
    parser.add_argument("--uniform", action="store_true", help="add the uniform test setting's group numbers")
    args = parser.parse_args(argv)
    names = run_names(args)
    if names is None:
        return 2
    groups = []
    try:
        for name, runs in group_runs(names, args.runs):
            check_seed_group(name, runs)
            groups.append((name, runs, [read_results(run, args.dataset) for run in runs]))
    except (FileNotFoundError, LongTailSegError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    rows = [row(name, results, parameter_count(runs[0]), args.uniform) for name, runs, results in groups]
    headers = ["run", "seeds", "params", "mIoU", "mACC"] + [f"mIoU-{g}" for g in GROUPS] + \
        [f"mACC-{g}" for g in GROUPS] + ["pACC", "Dice err"]
    if args.uniform:
        headers += [f"{m}-{g} unif." for m in ("mIoU", "mACC") for g in GROUPS]
    print(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
    # pACC and the Dice error too: with mIoU, the metrics of the PAT paper's tables.
    print_differences([(name, results) for name, _, results in groups], metric_keys(args.uniform),
                      seed_values, decimals={"DiceErr": 3})
    return 0


if __name__ == "__main__":
    sys.exit(main())
