#!/usr/bin/env python
"""Write the synthetic long-tailed data sets (ADE20K, Cityscapes and LVIS layouts) under --root.

Images of coloured, textured shapes whose classes follow a long-tailed distribution, with their
semantic labels and LVIS-style instance annotations, in the on-disk layouts of the real data sets,
so Detectron2's own loaders read them (`make data` runs this for `make demo`).

With --profile, a set with a real data set's class profile instead, 64x64 images:
  ade20k   150 classes whose shares of the training pixels are ADE20K's published Ratio column
           exactly (DisAlign's 20 / 55 / 75 head / body / tail groups); ADEChallengeData2016
           layout only, 300 training / 100 validation images by default;
  lvis_v1  LVIS v1's 1203 categories with their rare / common / frequent field (337 / 461 / 405)
           and training image counts following LVIS's (square roots, scaled down, at least one
           image each); LVIS json + COCO folders only, 1000 / 400 images by default.

Example:
    python tools/make_synthetic_data.py --root datasets/synthetic
    python tools/make_synthetic_data.py --root datasets/synthetic_ade20k_profile --profile ade20k
    python tools/make_synthetic_data.py --root datasets/synthetic_lvis_v1_profile --profile lvis_v1
    export DETECTRON2_DATASETS=datasets   # the configs' synthetic_* data sets are then found

With --format, one of the two data sets PAT adds, in its published layout instead (32 px, 12
images by default; `make data-pat` writes them and runs their prepare scripts):
  oxford_pet  images/*.jpg, annotations/trimaps/*.png (1 pet, 2 background, 3 boundary) and
              annotations/{trainval,test,list}.txt
  nyuv2       nyu_depth_v2_labeled.mat (MATLAB v7.3 / HDF5, the published arrays) and
              classMapping40.txt (its raw -> 40 class table)

    python tools/make_synthetic_data.py --root datasets/synthetic/oxford_pet --format oxford_pet
    python datasets/prepare_oxford_pet.py --root datasets/synthetic
    python tools/make_synthetic_data.py --root datasets/synthetic/nyuv2 --format nyuv2
    python datasets/prepare_nyuv2.py --root datasets/synthetic

A profile is refused in the folder another profile's sets are read from (e.g. --profile ade20k
into .../synthetic).
"""
import argparse
import sys

from longtailseg.data.synthetic.generator import (
    PROFILE_DEFAULTS,
    format_profile_summary,
    format_summary,
    generate,
    generate_profile,
)
from longtailseg.data.synthetic.layout import check_profile_folder
from longtailseg.data.synthetic.pat_formats import write_nyuv2_mat, write_oxford_pet
from longtailseg.errors import LongTailSegError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="output folder, e.g. datasets/synthetic")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--profile", choices=("default",) + tuple(PROFILE_DEFAULTS), default="default",
                        help="class profile: default (the 19-class set), ade20k or lvis_v1")
    parser.add_argument("--num-classes", type=int, default=19,
                        help="classes / LVIS categories of the default profile (default 19)")
    parser.add_argument("--num-images", type=int, default=None,
                        help="training images per set (default 400; profiles: 300 ade20k, 1000 lvis_v1)")
    parser.add_argument("--num-val-images", type=int, default=None,
                        help="validation images per set (default 100; profiles: 100 ade20k, 400 lvis_v1)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 64; --format: 32)")
    parser.add_argument("--format", choices=("oxford_pet", "nyuv2"), default=None,
                        help="write Oxford-IIIT Pet's or NYUv2's published layout into --root instead")
    parser.add_argument("--force", action="store_true", help="replace existing synthetic data")
    return parser.parse_args(argv)


def _write_pat_format(args):
    if args.profile != "default" or args.num_classes != 19 or args.num_val_images is not None:
        raise LongTailSegError(f"--format {args.format} takes --root, --seed, --num-images, --size and "
                               "--force only (its classes are the data set's own)")
    writer = write_oxford_pet if args.format == "oxford_pet" else write_nyuv2_mat
    size = args.size or 32
    summary = writer(args.root, num_images=12 if args.num_images is None else args.num_images, size=size, seed=args.seed, force=args.force)
    print(f"wrote {summary['images']} synthetic {args.format} images ({size} px) under {summary['folder']}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.format is None and args.size is None:
        args.size = 64
    try:
        # The sets registered from DETECTRON2_DATASETS/<folder> read that folder's profile: another
        # profile written there would fail every run that uses them.
        check_profile_folder(args.root, args.profile)
        if args.format is not None:
            return _write_pat_format(args)
        if args.profile == "default":
            summary = generate(
                args.root,
                seed=args.seed,
                num_classes=args.num_classes,
                num_train=400 if args.num_images is None else args.num_images,
                num_val=100 if args.num_val_images is None else args.num_val_images,
                size=args.size,
                force=args.force,
            )
            lines = format_summary(summary)
        else:
            if args.num_classes != 19:
                raise LongTailSegError(
                    f"--num-classes does not apply to --profile {args.profile} (its classes are "
                    "the real data set's); leave it out"
                )
            summary = generate_profile(
                args.root, args.profile, seed=args.seed, num_train=args.num_images,
                num_val=args.num_val_images, size=args.size, force=args.force,
            )
            lines = format_profile_summary(summary)
    except LongTailSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
