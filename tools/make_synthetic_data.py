#!/usr/bin/env python
"""Write the synthetic long-tailed data sets (ADE20K, Cityscapes and LVIS layouts) under --root.

Images of coloured, textured shapes whose classes follow a long-tailed distribution, with their
semantic labels and LVIS-style instance annotations, in the on-disk layouts of the real data sets,
so Detectron2's own loaders read them (`make data` runs this for `make demo`).

Example:
    python tools/make_synthetic_data.py --root datasets/synthetic
    export DETECTRON2_DATASETS=datasets   # the configs' synthetic_* data sets are then found
"""
import argparse
import sys

from longtailseg.data.synthetic.generator import format_summary, generate
from longtailseg.errors import LongTailSegError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="output folder, e.g. datasets/synthetic")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--num-classes", type=int, default=19,
                        help="classes / LVIS categories (default 19)")
    parser.add_argument("--num-images", type=int, default=400,
                        help="training images per set (default 400)")
    parser.add_argument("--num-val-images", type=int, default=100,
                        help="validation images per set (default 100)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--force", action="store_true", help="replace existing synthetic data")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        summary = generate(
            args.root,
            seed=args.seed,
            num_classes=args.num_classes,
            num_train=args.num_images,
            num_val=args.num_val_images,
            size=args.size,
            force=args.force,
        )
    except LongTailSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in format_summary(summary):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
