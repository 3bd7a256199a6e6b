#!/usr/bin/env python
r"""Count classes over a registered training split and write the class-statistics JSON.

    python tools/compute_class_stats.py --dataset synthetic_ade_sem_seg_train
    python tools/compute_class_stats.py --dataset ade20k_sem_seg_train \
        --object-info datasets/ADEChallengeData2016/objectInfo150.txt --output stats/ade20k.json
    python tools/compute_class_stats.py --dataset lvis_v1_train

Semantic segmentation: labelled pixels per class (ignore excluded), in parallel processes;
groups by share of all pixels, ignored ones included (head > --head-ratio, tail <= --tail-ratio;
with --object-info, objectInfo150's Ratio column as published: DisAlign's ADE20K groups). LVIS: instances and images
per category; groups from the json's r / c / f field. Point MODEL.LONG_TAIL.CLASS_STATS at the
output, or leave it empty to have training compute and cache the same file.
"""
import argparse
import os
import sys

import longtailseg  # noqa: F401  (compatibility patches, dataset registration)
from longtailseg.data.class_counting import compute_class_stats
from longtailseg.errors import LongTailSegError, one_line
from longtailseg.longtail import class_stats as cs
from tabulate import tabulate


def summary_table(stats):
    rows = []
    for group in cs.GROUP_NAMES:
        ids = stats.groups.get(group, [])
        names = ", ".join(stats.class_names[c] for c in ids[:4]) + (", ..." if len(ids) > 4 else "")
        rows.append([group, len(ids), f"{100 * stats.group_share(group):.2f}%", names])
    return tabulate(rows, headers=["group", "classes", f"share of {stats.unit}", "e.g."], tablefmt="pipe")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered training split, e.g. synthetic_ade_sem_seg_train")
    parser.add_argument("--output", help="JSON path (default: class_stats/<dataset>.json)")
    parser.add_argument("--head-ratio", type=float, default=cs.DEFAULT_HEAD_RATIO, help="head: share above this (default 0.01)")
    parser.add_argument("--tail-ratio", type=float, default=cs.DEFAULT_TAIL_RATIO, help="tail: share at most this (default 0.001)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="counting processes")
    parser.add_argument("--object-info", help="ADE20K's objectInfo150.txt: use its Ratio column instead of counting")
    args = parser.parse_args(argv)
    output = args.output or os.path.join("class_stats", f"{args.dataset}.json")
    try:
        stats = compute_class_stats(args.dataset, args.head_ratio, args.tail_ratio, args.workers, args.object_info)
        cs.save(stats, output)
    except LongTailSegError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"{stats.dataset}: {stats.num_classes} classes, {stats.num_images} images, "
          f"{sum(stats.counts):,.0f} {stats.unit}; groups by {stats.group_rule}")
    print(summary_table(stats))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
