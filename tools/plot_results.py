#!/usr/bin/env python
r"""Figures of the saved results of one or more runs, as a long-tail researcher reads them, at any
class count (19, 150, 1203).

Each run is an OUTPUT_DIR (its ``inference/<dataset>/sem_seg_results.json`` and
``sem_seg_confusion_matrix.npy``, or ``lvis_results.json``, are read). Runs given the same
--names entry are seeds of one method (as compare_results.py marks them): their numbers are
averaged, with the standard deviation as error bars. Writes to --output:

* ``per_class_vs_frequency.png``: IoU and accuracy of every class (a point each, no lines)
  against its share of the training pixels (log axis), the head / body / tail boundaries drawn,
  the worst tail classes named, classes absent from training at the left edge; each method's
  legend gives Pearson's r of accuracy and pixel share (MEDOE's Table 10), also printed;
* ``groups.png``: mIoU and mACC of head / body / tail / all, bars per method;
* ``confusion_<name>.png``: what each group's pixels are predicted as (head / body / tail /
  ignored), and the most confused class pairs by name (a tail class swallowed by a head class);
  the full class-by-class matrix is drawn only up to 40 classes, and kept as data in
  ``confusion_<name>.csv`` (raw pixel counts, ground truth in rows);
* ``lvis_ap_groups.png``: AP, APr, APc, APf (segm and bbox) per method, for LVIS runs;
* ``lvis_rare_ap.png``: the AP of each rare category against its number of training images
  (from ``lvis_per_category_ap.json``, which the LVIS evaluation writes beside
  ``lvis_results.json``).

examples:
  python tools/plot_results.py output/synthetic/deeplab_v3_plus output/synthetic/blv_deeplab \
      output/synthetic/disalign_deeplab --names CE BLV DisAlign --output output/synthetic/figures
  python tools/plot_results.py output/ce-seed1 output/ce-seed2 output/blv-seed1 output/blv-seed2 \
      --names CE CE BLV BLV
  python tools/plot_results.py output/synthetic/mask_rcnn_baseline output/synthetic/mask_rcnn_cosine
"""
import argparse
import csv
import glob
import os
import sys
import warnings

import matplotlib
import matplotlib.patches
import matplotlib.ticker

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from longtailseg.errors import LongTailSegError, one_line  # noqa: E402
from longtailseg.evaluation.lvis_evaluation import PER_CATEGORY_FILE_NAME  # noqa: E402
from longtailseg.evaluation.seed_summary import group_runs  # noqa: E402
from longtailseg.evaluation.sem_seg_evaluation import accuracy_frequency_correlation  # noqa: E402
from longtailseg.io import write_atomically  # noqa: E402
from longtailseg.safe_files import load_json, load_npy  # noqa: E402

GROUPS = ("head", "body", "tail", "all")
CLASS_GROUPS = ("head", "body", "tail")
LVIS_KEYS = ("AP", "APr", "APc", "APf")
FULL_MATRIX_MAX_CLASSES = 40  # beyond this a class-by-class heatmap cannot carry readable labels


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
        per_category = os.path.join(os.path.dirname(files[0]), PER_CATEGORY_FILE_NAME)
        if os.path.isfile(per_category):
            content = load_json(per_category)
            results = dict(results, per_category={task: rows for task, rows in content.items()
                                                  if isinstance(rows, list)})
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


class Method:
    """The runs sharing one --names entry (seeds): their results, averaged where plotted."""

    def __init__(self, name, runs):
        self.name = name
        self.kind = runs[0][0]
        self.results = [results for _, results, _ in runs]
        self.matrices = [matrix for _, _, matrix in runs if matrix is not None]
        if self.kind == "sem_seg":
            names = [[c["name"] for c in r["per_class"]] for r in self.results]
            if any(n != names[0] for n in names):
                raise ResultsError(f"the runs named {name!r} were evaluated on different classes; give "
                                   "runs of different datasets different --names")

    @property
    def classes(self):
        return self.results[0]["per_class"]

    def per_class(self, key):
        """(mean, std) over seeds of a per-class metric; NaN where a class has no value."""
        values = np.array([[np.nan if c.get(key) is None else c[key] for c in r["per_class"]]
                           for r in self.results], dtype=float)
        return _nanmean(values), _nanstd(values)

    def metric(self, section, key):
        values = np.array([np.nan if r.get(section, {}).get(key) is None else r[section][key]
                           for r in self.results], dtype=float)
        return _nanmean(values), _nanstd(values)

    def label(self):
        n = len(self.results)
        return self.name if n == 1 else f"{self.name} (mean ± std of {n} runs)"

    def pearson(self):
        """Pearson's r of per-class accuracy and training pixel share (MEDOE's Table 10), mean
        over the runs: the evaluation's own value, else computed from the saved per-class numbers."""
        values = []
        for results in self.results:
            r = results["sem_seg"].get("Pearson-ACC-frequency")
            if r is None:
                classes = results["per_class"]
                r = accuracy_frequency_correlation([c.get("ACC") for c in classes],
                                                   [np.nan if c.get("train_pixel_share") is None
                                                    else c["train_pixel_share"] for c in classes])
            values.append(np.nan if r is None else r)
        return float(_nanmean(np.array(values, dtype=float)))


def _nanmean(values):
    """Mean over runs (axis 0), NaN where no run has a value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN is the answer
        return np.nanmean(values, axis=0)


def _nanstd(values):
    """Sample standard deviation over runs (axis 0); 0 where fewer than two runs have a value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(values, axis=0, ddof=1)
    return np.where(np.sum(~np.isnan(values), axis=0) >= 2, std, 0.0)


def _save(fig, path):
    """Through a temporary file (``longtailseg.io.write_atomically``): a figure is whole or absent."""
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"), binary=True)
    plt.close(fig)
    return path


def group_boundaries(shares, groups):
    """Shares between adjacent groups (geometric middle of the closest classes on either side):
    where the head / body / tail rule put its thresholds, read from the groups it produced."""
    bounds = []
    for low, high in (("tail", "body"), ("body", "head")):
        below = [s for s, g in zip(shares, groups) if g == low and s > 0]
        above = [s for s, g in zip(shares, groups) if g == high and s > 0]
        if below and above:
            bounds.append((f"{low} | {high}", float(np.sqrt(max(below) * min(above)))))
    return bounds


def plot_per_class(methods, path, worst=5):
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
    reference = methods[0].classes
    shares = np.array([np.nan if c.get("train_pixel_share") is None else c["train_pixel_share"]
                       for c in reference], dtype=float)
    groups = [c.get("group") for c in reference]
    known = ~np.isnan(shares)
    positive = shares[known & (shares > 0)]
    if positive.size == 0:
        raise ResultsError("the results have no training pixel share per class (the run had no class "
                           "statistics); evaluate it again with tools/train_net.py --eval-only")
    # Classes absent from training (share 0) have no place on a log axis: a column left of the rest.
    zero_x = positive.min() / 5
    x = np.where(shares > 0, shares, zero_x)
    for method in methods:
        pearson = method.pearson()
        print(f"{method.name}: Pearson r of per-class accuracy and training pixel share {pearson:.3f}")
        for ax, key in zip(axes, ("IoU", "ACC")):
            mean, std = method.per_class(key)
            ax.errorbar(x[known], mean[known], yerr=std[known] if len(method.results) > 1 else None,
                        fmt="o", markersize=3.5, capsize=1.5, elinewidth=0.6, alpha=0.75,
                        label=f"{method.label()}, ACC-frequency r = {pearson:.2f}", linestyle="none")
    bounds = group_boundaries(shares[known], [g for g, k in zip(groups, known) if k])
    for ax, key in zip(axes, ("IoU", "accuracy")):
        ax.set_xscale("log")
        ax.set_xlim(zero_x / 2, positive.max() * 2)
        for text, where in bounds:
            ax.axvline(where, color="grey", linestyle="--", linewidth=1)
            ax.text(where, 101, text, ha="center", va="bottom", fontsize=8, color="grey")
        if np.any(shares == 0):
            ax.axvline(zero_x * 2, color="black", linewidth=0.6)
            # no share tick under the column of absent classes: its position is not a share
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
                lambda v, _, edge=zero_x * 2: "" if v < edge else f"$10^{{{int(round(np.log10(v)))}}}$"))
            ax.text(zero_x, 101, "absent from\ntraining", ha="center", va="bottom", fontsize=7)
        ax.set_xlabel("share of training pixels (log)")
        ax.set_ylabel(f"{key} (%)")
        ax.set_ylim(-2, 108)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("per-class IoU against training frequency", pad=16)
    axes[1].set_title("per-class accuracy against training frequency", pad=16)
    # The worst tail classes of the first method, ringed and named in a box (labels beside points
    # collide where many tail classes share an IoU of 0).
    mean_iou, _ = methods[0].per_class("IoU")
    tail = [c for c in range(len(reference)) if groups[c] == "tail" and known[c] and not np.isnan(mean_iou[c])]
    worst_ids = sorted(tail, key=lambda c: mean_iou[c])[:worst]
    if worst_ids:
        axes[0].scatter(x[worst_ids], mean_iou[worst_ids], s=90, facecolors="none", edgecolors="red", linewidths=1.2)
        listing = "\n".join(f"{reference[c]['name']}: {mean_iou[c]:.1f}" for c in worst_ids)
        axes[0].text(0.98, 0.02, f"worst tail classes, IoU of {methods[0].name}\n{listing}", transform=axes[0].transAxes,
                     ha="right", va="bottom", fontsize=7, bbox=dict(facecolor="white", edgecolor="red", alpha=0.9))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 4), fontsize=8)
    unknown = int((~known).sum())
    if unknown:
        fig.text(0.5, -0.08, f"{unknown} classes without a training share are not drawn", ha="center", fontsize=8)
    return _save(fig, path)


def plot_groups(methods, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    width = 0.8 / len(methods)
    x = np.arange(len(GROUPS))
    for i, method in enumerate(methods):
        for ax, key in zip(axes, ("mIoU", "mACC")):
            stats = [method.metric("sem_seg", key if g == "all" else f"{key}-{g}") for g in GROUPS]
            means = [m for m, _ in stats]
            errors = [s for _, s in stats] if len(method.results) > 1 else None
            bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=errors, capsize=3,
                          label=method.label())
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
    for ax, key in zip(axes, ("mIoU", "mACC")):
        ax.set_xticks(x, GROUPS)
        ax.set_ylabel(f"{key} (%)")
        ax.set_title(f"{key} by class group")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def gt_by_pred(method):
    """Pixel counts, ground truth in rows, prediction in columns (the last column: predicted as
    the ignore label or outside the classes), summed over the method's runs."""
    n = len(method.classes)
    total = None
    for matrix in method.matrices:  # saved as [prediction, ground truth], ignore last
        counts = np.asarray(matrix, dtype=np.float64).T[:n]
        counts = np.concatenate([counts[:, :n], counts[:, n:].sum(axis=1, keepdims=True)], axis=1)
        total = counts if total is None else total + counts
    return total


def group_confusion(counts, groups):
    """Rows: ground-truth group, columns: predicted group (+ ignored), each row normalised."""
    names = list(CLASS_GROUPS)
    member = {g: [c for c, group in enumerate(groups) if group == g] for g in names}
    table = np.zeros((len(names), len(names) + 1))
    for i, gt in enumerate(names):
        rows = counts[member[gt]]
        for j, pred in enumerate(names):
            table[i, j] = rows[:, member[pred]].sum()
        table[i, -1] = rows[:, -1].sum()
    totals = table.sum(axis=1, keepdims=True)
    return np.divide(table, totals, out=np.full_like(table, np.nan), where=totals > 0), names


def top_confused_pairs(counts, k=15, min_pixels=100):
    """[(gt class, predicted class, share of the gt class's pixels)] of the k largest off-diagonal
    shares, among ground-truth classes with at least ``min_pixels`` pixels (a class of a handful
    of test pixels would top the list by chance)."""
    n = counts.shape[0]
    totals = counts.sum(axis=1)
    ranked = totals[:, None] >= max(min_pixels, 1)
    shares = np.divide(counts[:, :n], totals[:, None], out=np.zeros((n, n)), where=ranked)
    np.fill_diagonal(shares, 0)
    flat = np.argsort(shares, axis=None)[::-1][:k]
    return [(int(i // n), int(i % n), float(shares.flat[i])) for i in flat if shares.flat[i] > 0]


def write_confusion_csv(method, counts, path):
    names = [c["name"] for c in method.classes]

    def write(f):
        writer = csv.writer(f)
        writer.writerow(["ground truth \\ predicted"] + names + ["ignored / other"])
        for name, row in zip(names, counts):
            writer.writerow([name] + [int(v) for v in row])

    write_atomically(path, write)
    return path


def plot_confusion(method, path, top=15, min_pixels=100):
    counts = gt_by_pred(method)
    classes = method.classes
    groups = [c.get("group") or "-" for c in classes]
    full = len(classes) <= FULL_MATRIX_MAX_CLASSES
    columns = 3 if full else 2
    fig, axes = plt.subplots(1, columns, figsize=(6.5 * columns, 6.5),
                             gridspec_kw={"width_ratios": [1, 1.4] + ([1.6] if full else [])})
    table, names = group_confusion(counts, groups)
    ax = axes[0]
    ax.imshow(table, cmap="viridis", vmin=0, vmax=1)
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            if not np.isnan(table[i, j]):
                ax.text(j, i, f"{100 * table[i, j]:.1f}%", ha="center", va="center", fontsize=9,
                        color="white" if table[i, j] < 0.6 else "black")
    sizes = {g: groups.count(g) for g in names}
    ax.set_xticks(range(len(names) + 1), names + ["ignored /\nother"])
    ax.set_yticks(range(len(names)), [f"{g}\n({sizes[g]} classes)" for g in names])
    ax.set_xlabel("predicted as")
    ax.set_ylabel("ground-truth group")
    ax.set_title("where each group's pixels go")
    ax = axes[1]
    pairs = top_confused_pairs(counts, top, min_pixels)
    gt_pixels = counts.sum(axis=1)
    labels = [f"{classes[g]['name']} ({groups[g]}, {int(gt_pixels[g]):,} px) → {classes[p]['name']} ({groups[p]})"
              for g, p, _ in pairs]
    colours = {"head": "tab:blue", "body": "tab:orange", "tail": "tab:red"}
    ax.barh(range(len(pairs)), [100 * s for _, _, s in pairs],
            color=[colours.get(groups[g], "grey") for g, _, _ in pairs])
    ax.set_yticks(range(len(pairs)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.legend(handles=[matplotlib.patches.Patch(color=c, label=f"{g} ground truth") for g, c in colours.items()],
              fontsize=7, loc="lower right")
    ax.set_xlabel("share of the ground-truth class's pixels (%)")
    ax.set_title(f"the {len(pairs)} most confused pairs (bar colour: ground-truth group;\n"
                 f"classes with at least {min_pixels:,} ground-truth pixels)")
    ax.grid(True, axis="x", alpha=0.3)
    if full:
        order = sorted(range(len(classes)), key=lambda c: -(classes[c].get("train_pixel_share") or 0))
        matrix = counts[:, :len(classes)][np.ix_(order, order)]
        totals = matrix.sum(axis=1, keepdims=True)
        normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        ax = axes[2]
        image = ax.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
        ticks = [f"{classes[c]['name']} ({groups[c]})" for c in order]
        ax.set_xticks(range(len(order)), ticks, rotation=90, fontsize=6)
        ax.set_yticks(range(len(order)), ticks, fontsize=6)
        ax.set_xlabel("predicted class (most frequent in training first)")
        ax.set_title("all classes, rows normalised")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    runs = len(method.matrices)
    fig.suptitle(f"{method.name}: confusion" + (f" (pixels of {runs} runs summed)" if runs > 1 else ""), y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def plot_lvis(methods, path):
    tasks = [t for t in ("segm", "bbox") if any(t in r for m in methods for r in m.results)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False, sharey=True)
    width = 0.8 / len(methods)
    x = np.arange(len(LVIS_KEYS))
    for ax, task in zip(axes[0], tasks):
        for i, method in enumerate(methods):
            stats = [method.metric(task, k) for k in LVIS_KEYS]
            bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, [m for m, _ in stats], width,
                          yerr=[s for _, s in stats] if len(method.results) > 1 else None, capsize=3,
                          label=method.label())
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(x, ["AP\n(all)", "APr\n(rare)", "APc\n(common)", "APf\n(frequent)"])
        ax.set_ylabel("AP")
        ax.set_title(f"LVIS {task} AP by frequency group")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def plot_lvis_rare(methods, path, worst=5):
    """AP of each rare category (mean over a method's runs, small points) against its training
    image count, and per image count the mean over those categories (large markers, error bars:
    standard deviation of that mean over the runs). Needs per-category AP."""
    with_categories = [m for m in methods if all("per_category" in r for r in m.results)]
    if not with_categories:
        return None
    tasks = [t for t in ("segm", "bbox") if t in with_categories[0].results[0]["per_category"]]
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 4.8), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    for ax, task in zip(axes[0], tasks):
        for i, method in enumerate(with_categories):
            categories = method.results[0]["per_category"][task]
            rare = [k for k, c in enumerate(categories) if c.get("frequency") == "r"]
            images = np.array([categories[k]["image_count"] or 0 for k in rare], dtype=float)
            values = np.array([[np.nan if r["per_category"][task][k]["AP"] is None
                                else r["per_category"][task][k]["AP"] for k in rare] for r in method.results])
            colour = f"C{i}"
            jitter = np.maximum(images, 0.5) * np.exp(rng.uniform(-0.07, 0.07, images.size))  # integer counts
            ax.scatter(jitter, _nanmean(values), s=6, alpha=0.35, color=colour)
            counts = sorted(set(images.tolist()))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                per_run = np.array([[np.nanmean(run[images == n]) for n in counts] for run in values])
            ax.errorbar(np.maximum(counts, 0.5), _nanmean(per_run), yerr=_nanstd(per_run) if len(values) > 1 else None,
                        fmt="D", markersize=6, capsize=3, color=colour, markeredgecolor="black",
                        linestyle="none", label=method.label())
        first = with_categories[0]
        categories = first.results[0]["per_category"][task]
        rare = [k for k, c in enumerate(categories) if c.get("frequency") == "r"]
        means = _nanmean(np.array([[np.nan if r["per_category"][task][k]["AP"] is None
                                    else r["per_category"][task][k]["AP"] for k in rare] for r in first.results]))
        ranked = [k for _, k in sorted((m, k) for m, k in zip(means, rare) if not np.isnan(m))][:worst]
        listing = "\n".join(f"{categories[k]['name']} ({categories[k]['image_count']} img): "
                            f"{means[rare.index(k)]:.1f}" for k in ranked)
        if listing:
            ax.text(0.98, 0.98, f"lowest AP of {first.name}\n{listing}", transform=ax.transAxes, ha="right",
                    va="top", fontsize=7, bbox=dict(facecolor="white", edgecolor="grey", alpha=0.9))
        ax.set_xscale("log")
        ax.set_xlabel("training images holding the category (log; points jittered)")
        ax.set_ylabel("AP")
        ax.set_title(f"LVIS {task}: rare categories (points) and their mean per image count (diamonds)",
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def file_stem(name, used):
    """A file-name-safe form of ``name``, distinct from every stem in ``used``."""
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "run"
    candidate, n = stem, 2
    while candidate in used:
        candidate, n = f"{stem}_{n}", n + 1
    used.add(candidate)
    return candidate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("examples:", 1)[1].join(["examples:", ""]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="OUTPUT_DIRs of runs (or their results JSON files)")
    parser.add_argument("--names", nargs="+", help="a legend name per run; runs sharing a name are seeds "
                        "of one method, averaged (default: the folder names)")
    parser.add_argument("--dataset", help="the inference/<dataset> folder to read (default: the first one)")
    parser.add_argument("--top", type=int, default=15, help="confused class pairs to name (default: %(default)s)")
    parser.add_argument("--min-pixels", type=int, default=100,
                        help="rank confused pairs among classes with at least this many ground-truth "
                             "pixels (default: %(default)s)")
    parser.add_argument("--output", default="output/figures", help="folder for the figures (default: %(default)s)")
    args = parser.parse_args(argv)
    names = args.names or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"--names gives {len(names)} names for {len(args.runs)} runs")
    try:
        if os.path.exists(args.output) and not os.path.isdir(args.output):
            raise ResultsError(f"--output {args.output} is a file, not a folder; name a folder for the "
                               "figures (it is created when missing)")
        loaded = {run: load_run(run, args.dataset) for run in dict.fromkeys(args.runs)}
        methods = []
        for name, runs in group_runs(names, args.runs):
            kinds = {loaded[run][0] for run in runs}
            if len(kinds) > 1:
                raise ResultsError(f"the runs named {name!r} mix semantic segmentation and LVIS results")
            methods.append(Method(name, [loaded[run] for run in runs]))
    except (LongTailSegError, OSError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    written = []
    sem_seg = [m for m in methods if m.kind == "sem_seg"]
    lvis = [m for m in methods if m.kind == "lvis"]
    try:
        if sem_seg:
            written.append(plot_per_class(sem_seg, os.path.join(args.output, "per_class_vs_frequency.png")))
            written.append(plot_groups(sem_seg, os.path.join(args.output, "groups.png")))
            used = set()
            for method in sem_seg:
                if method.matrices:
                    stem = os.path.join(args.output, f"confusion_{file_stem(method.name, used)}")
                    written.append(write_confusion_csv(method, gt_by_pred(method), f"{stem}.csv"))
                    written.append(plot_confusion(method, f"{stem}.png", args.top, args.min_pixels))
        if lvis:
            written.append(plot_lvis(lvis, os.path.join(args.output, "lvis_ap_groups.png")))
            rare = plot_lvis_rare(lvis, os.path.join(args.output, "lvis_rare_ap.png"))
            if rare:
                written.append(rare)
    except LongTailSegError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
