#!/usr/bin/env python
r"""Training curves of one or more runs from their ``metrics.json`` (Detectron2's JSONWriter: one
line per logging period, plus one per periodic evaluation), overlaid in one figure:

* the total loss (faint: as logged; solid: a running median over --smooth records) and each
  loss term of the first run when there are several;
* the learning rate;
* the evaluation metrics over iterations, by class group: mIoU of all / head / body / tail
  classes for semantic segmentation, AP / APr / APc / APf (segm, else bbox) for LVIS.

Runs given the same --names entry are seeds of one method: their mean is drawn, with the band
of one standard deviation, at the iterations all of them logged.

examples:
  python tools/plot_training_curves.py output/synthetic/deeplab_v3_plus output/synthetic/blv_deeplab \
      --names CE BLV --output output/synthetic/figures/training_curves.png
  tensorboard --logdir output/synthetic      # the same scalars, live, from the runs' event files
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from longtailseg.errors import LongTailSegError, one_line  # noqa: E402
from longtailseg.evaluation.seed_summary import group_runs  # noqa: E402
from longtailseg.io import write_atomically  # noqa: E402
from longtailseg.safe_files import load_json_lines  # noqa: E402

SEM_SEG_CURVES = [("sem_seg/mIoU", "all"), ("sem_seg/mIoU-head", "head"), ("sem_seg/mIoU-body", "body"),
                  ("sem_seg/mIoU-tail", "tail")]
LVIS_CURVES = [("{task}/AP", "AP"), ("{task}/APr", "APr"), ("{task}/APc", "APc"), ("{task}/APf", "APf")]


class CurvesError(LongTailSegError):
    pass


def read_metrics(run):
    """Records of a run folder's (or a file's) metrics.json, sorted by iteration."""
    path = run if os.path.isfile(run) else os.path.join(run, "metrics.json")
    if not os.path.isfile(path):
        raise CurvesError(f"{run} holds no metrics.json; give the OUTPUT_DIR of a training run "
                          "(tools/train_net.py writes it every 20 iterations)")
    records = [r for r in load_json_lines(path) if isinstance(r, dict) and "iteration" in r]
    if not records:
        raise CurvesError(f"{path} has no record with an iteration; the run logged nothing yet")
    return sorted(records, key=lambda r: r["iteration"])


def series(records, key):
    """(iterations, values) of the records that hold ``key`` (a resumed run may log an iteration
    twice: the last record wins)."""
    points = {r["iteration"]: float(r[key]) for r in records if isinstance(r.get(key), (int, float))}
    its = sorted(points)
    return np.array(its), np.array([points[i] for i in its])


def running_median(values, window):
    if window <= 1 or len(values) < 3:
        return values
    half = window // 2
    return np.array([np.median(values[max(0, i - half):i + half + 1]) for i in range(len(values))])


def mean_over_seeds(runs, key):
    """(iterations logged by every run, mean, std) of ``key``."""
    curves = [series(records, key) for records in runs]
    common = sorted(set.intersection(*(set(its.tolist()) for its, _ in curves))) if curves else []
    if not common:
        return np.array([]), np.array([]), np.array([])
    stacked = np.array([[dict(zip(its.tolist(), vals))[i] for i in common] for its, vals in curves])
    std = stacked.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(common))
    return np.array(common), stacked.mean(axis=0), std


def metric_curves(records):
    """The evaluation keys to draw: sem-seg groups, else LVIS segm (or bbox) groups."""
    keys = {k for r in records for k in r}
    if "sem_seg/mIoU" in keys:
        return "mIoU (%)", [(k, label) for k, label in SEM_SEG_CURVES if k in keys]
    for task in ("segm", "bbox"):
        if f"{task}/AP" in keys:
            return f"{task} AP", [(k.format(task=task), label) for k, label in LVIS_CURVES
                                  if k.format(task=task) in keys]
    return None, []


def plot(methods, path, smooth):
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    loss_ax, lr_ax, metric_ax = axes
    styles = {"all": "-", "AP": "-", "head": "--", "APf": "--", "body": "-.", "APc": "-.", "tail": ":", "APr": ":"}
    metric_label = None
    for i, (name, runs) in enumerate(methods):
        colour = f"C{i}"
        label = name if len(runs) == 1 else f"{name} (mean ± std of {len(runs)} runs)"
        its, mean, std = mean_over_seeds(runs, "total_loss")
        if its.size:
            loss_ax.plot(its, mean, color=colour, alpha=0.25, linewidth=0.8)
            loss_ax.plot(its, running_median(mean, smooth), color=colour, linewidth=1.6, label=label)
            if len(runs) > 1:
                loss_ax.fill_between(its, mean - std, mean + std, color=colour, alpha=0.15)
        its, mean, _ = mean_over_seeds(runs, "lr")
        if its.size:
            lr_ax.plot(its, mean, color=colour, label=label)
        found_label, curves = metric_curves(runs[0])
        metric_label = metric_label or found_label
        for key, group in curves:
            its, mean, std = mean_over_seeds(runs, key)
            if its.size:
                metric_ax.errorbar(its, mean, yerr=std if len(runs) > 1 else None, color=colour,
                                   linestyle=styles.get(group, "-"), marker="o", markersize=3, capsize=2,
                                   label=f"{name}: {group}")
    loss_ax.set_title(f"total loss (solid: running median of {smooth} records)")
    loss_ax.set_yscale("log")
    lr_ax.set_title("learning rate")
    metric_ax.set_title(f"{metric_label or 'evaluation'} at the periodic evaluations")
    if metric_label is None:
        metric_ax.text(0.5, 0.5, "no evaluation logged\n(TEST.EVAL_PERIOD 0 and no final evaluation)",
                       ha="center", va="center", transform=metric_ax.transAxes)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, handlelength=3.5)  # long enough to tell the groups' dash styles apart
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"), binary=True)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("examples:", 1)[1].join(["examples:", ""]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="OUTPUT_DIRs of training runs (or their metrics.json)")
    parser.add_argument("--names", nargs="+", help="a legend name per run; runs sharing a name are seeds, "
                        "averaged (default: the folder names)")
    parser.add_argument("--smooth", type=int, default=9, help="running-median window of the loss (records)")
    parser.add_argument("--output", default="output/figures/training_curves.png", help="the PNG to write")
    args = parser.parse_args(argv)
    names = args.names or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"--names gives {len(names)} names for {len(args.runs)} runs")
    try:
        if os.path.isdir(args.output):
            raise CurvesError(f"--output {args.output} is a folder; name the PNG file to write")
        methods = [(name, [read_metrics(run) for run in runs]) for name, runs in group_runs(names, args.runs)]
    except (LongTailSegError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    print(f"wrote {plot(methods, args.output, args.smooth)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
