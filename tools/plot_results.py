#!/usr/bin/env python
r"""Figures of the saved results of one or more runs, as a long-tail researcher reads them.

Each run is an OUTPUT_DIR (its ``inference/<dataset>/sem_seg_results.json`` and
``sem_seg_confusion_matrix.npy``, or ``lvis_results.json``, are read). Writes PNGs to --output:

* ``per_class_vs_frequency.png``: IoU and accuracy of every class against its share of the
  training pixels (log axis), one series per run: where the tail loses; each run's legend
  gives Pearson's r of accuracy and pixel share (MEDOE's Table 10), also printed;
* ``groups.png``: mIoU and mACC of head / body / tail / all, bars per run;
* ``confusion_<run>.png``: each run's confusion matrix, classes sorted by training frequency,
  each ground-truth row normalised (what a class's pixels are predicted as);
* ``lvis_ap_groups.png``: AP, APr, APc, APf (segm and bbox) per run, for LVIS runs.

examples:
  python tools/plot_results.py output/synthetic/deeplab_v3_plus output/synthetic/blv_deeplab \
      output/synthetic/disalign_deeplab --names CE BLV DisAlign --output output/synthetic/figures
  python tools/plot_results.py output/synthetic/mask_rcnn_baseline output/synthetic/mask_rcnn_cosine
"""
import argparse
import glob
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from longtailseg.errors import LongTailSegError, one_line  # noqa: E402
from longtailseg.evaluation.sem_seg_evaluation import accuracy_frequency_correlation  # noqa: E402
from longtailseg.safe_files import load_json, load_npy  # noqa: E402

GROUPS = ("head", "body", "tail", "all")
LVIS_KEYS = ("AP", "APr", "APc", "APf")


class ResultsError(LongTailSegError):
    pass


def load_run(path, dataset=None):
    """(kind, results dict, confusion matrix or None) of one run folder or results file."""
    if os.path.isfile(path):
        files = [path]
    else:
        files = sorted(glob.glob(os.path.join(path, "inference", dataset or "*", "sem_seg_results.json")))
        files += sorted(glob.glob(os.path.join(path, "inference", dataset or "*", "lvis_results.json")))
    if not files:
        raise ResultsError(f"{path} holds no inference/<dataset>/sem_seg_results.json or lvis_results.json; "
                           "train or evaluate that run first (tools/train_net.py --eval-only)")
    results = load_json(files[0])  # data only (longtailseg.safe_files)
    if not isinstance(results, dict):
        raise ResultsError(f"{files[0]} holds a {type(results).__name__}, not evaluation results; "
                           "evaluate the run again with tools/train_net.py --eval-only")
    if os.path.basename(files[0]) == "lvis_results.json":
        return "lvis", results, None
    if "per_class" not in results:
        raise ResultsError(f"{files[0]} has no per-class numbers (written by an older LongTailSeg); "
                           "evaluate the run again with tools/train_net.py --eval-only")
    if not isinstance(results.get("sem_seg"), dict) or not isinstance(results["per_class"], list):
        raise ResultsError(f"{files[0]} is not the sem_seg_results.json evaluation writes (no \"sem_seg\" "
                           "metrics or \"per_class\" list); evaluate the run again with tools/train_net.py --eval-only")
    matrix_file = os.path.join(os.path.dirname(files[0]), "sem_seg_confusion_matrix.npy")
    matrix = load_npy(matrix_file) if os.path.isfile(matrix_file) else None  # never unpickles
    return "sem_seg", results, matrix


def _save(fig, path):
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_per_class(runs, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for name, results, _ in runs:
        rows = [c for c in results["per_class"] if c.get("train_pixel_share")]
        share = np.array([c["train_pixel_share"] for c in rows])
        order = np.argsort(share)
        pearson = accuracy_frequency_correlation([c["ACC"] for c in rows], share)
        print(f"{name}: Pearson r of per-class accuracy and training pixel share {pearson:.3f}")
        for ax, key in zip(axes, ("IoU", "ACC")):
            values = np.array([np.nan if c[key] is None else c[key] for c in rows])
            ax.plot(share[order], values[order], marker="o", markersize=4, linewidth=1,
                    label=f"{name} (ACC-frequency r = {pearson:.2f})")
    for ax, key in zip(axes, ("IoU", "accuracy")):
        ax.set_xscale("log")
        ax.set_xlabel("share of training pixels (log)")
        ax.set_ylabel(f"{key} (%)")
        ax.set_ylim(-2, 102)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"per-class {key} against training frequency")
    axes[0].legend()
    return _save(fig, path)


def plot_groups(runs, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    width = 0.8 / len(runs)
    x = np.arange(len(GROUPS))
    for i, (name, results, _) in enumerate(runs):
        metrics = results["sem_seg"]
        for ax, key in zip(axes, ("mIoU", "mACC")):
            values = [metrics.get(key if g == "all" else f"{key}-{g}") for g in GROUPS]
            values = [np.nan if v is None else v for v in values]
            bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=name)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
    for ax, key in zip(axes, ("mIoU", "mACC")):
        ax.set_xticks(x, GROUPS)
        ax.set_ylabel(f"{key} (%)")
        ax.set_title(f"{key} by class group")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend()
    return _save(fig, path)


def plot_confusion(name, results, matrix, path):
    """Rows: ground truth, columns: prediction, both sorted by training frequency (most frequent
    first); each row sums to 1 over the classes (the ignore column is left out)."""
    classes = results["per_class"]
    order = sorted(range(len(classes)), key=lambda c: -(classes[c].get("train_pixel_share") or 0))
    num_classes = len(classes)
    gt_by_pred = matrix[:num_classes, :num_classes].T.astype(float)  # saved as [pred, gt]
    gt_by_pred = gt_by_pred[np.ix_(order, order)]
    totals = gt_by_pred.sum(axis=1, keepdims=True)
    normalised = np.divide(gt_by_pred, totals, out=np.zeros_like(gt_by_pred), where=totals > 0)
    size = max(5, 0.35 * num_classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    labels = [f"{classes[c]['name']} ({classes[c].get('group') or '-'})" for c in order]
    if num_classes <= 60:
        ax.set_xticks(range(num_classes), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(num_classes), labels, fontsize=7)
    ax.set_xlabel("predicted class (most frequent in training first)")
    ax.set_ylabel("ground-truth class")
    ax.set_title(f"{name}: confusion matrix, rows normalised")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_lvis(runs, path):
    tasks = [t for t in ("segm", "bbox") if any(t in r for _, r, _ in runs)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False, sharey=True)
    width = 0.8 / len(runs)
    x = np.arange(len(LVIS_KEYS))
    for ax, task in zip(axes[0], tasks):
        for i, (name, results, _) in enumerate(runs):
            values = [results.get(task, {}).get(k, np.nan) for k in LVIS_KEYS]
            bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=name)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(x, ["AP\n(all)", "APr\n(rare)", "APc\n(common)", "APf\n(frequent)"])
        ax.set_ylabel("AP")
        ax.set_title(f"LVIS {task} AP by frequency group")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend()
    return _save(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("examples:", 1)[1].join(["examples:", ""]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="OUTPUT_DIRs of runs (or their results JSON files)")
    parser.add_argument("--names", nargs="+", help="a legend name per run (default: the folder names)")
    parser.add_argument("--dataset", help="the inference/<dataset> folder to read (default: the first one)")
    parser.add_argument("--output", default="output/figures", help="folder for the PNGs (default: %(default)s)")
    args = parser.parse_args(argv)
    names = args.names or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"--names gives {len(names)} names for {len(args.runs)} runs")
    try:
        if os.path.exists(args.output) and not os.path.isdir(args.output):
            raise ResultsError(f"--output {args.output} is a file, not a folder; name a folder for the "
                               "figures (it is created when missing)")
        loaded = [(name, *load_run(run, args.dataset)) for name, run in zip(names, args.runs)]
    except (LongTailSegError, OSError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    written = []
    sem_seg = [(n, r, m) for n, kind, r, m in loaded if kind == "sem_seg"]
    lvis = [(n, r, m) for n, kind, r, m in loaded if kind == "lvis"]
    if sem_seg:
        written.append(plot_per_class(sem_seg, os.path.join(args.output, "per_class_vs_frequency.png")))
        written.append(plot_groups(sem_seg, os.path.join(args.output, "groups.png")))
        for name, results, matrix in sem_seg:
            if matrix is not None:
                safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
                written.append(plot_confusion(name, results, matrix,
                                              os.path.join(args.output, f"confusion_{safe}.png")))
    if lvis:
        written.append(plot_lvis(lvis, os.path.join(args.output, "lvis_ap_groups.png")))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
