#!/usr/bin/env python
"""PAT counts training in epochs ("rounds", 100 in the paper); Detectron2 in iterations. Print the
SOLVER.MAX_ITER of EPOCHS passes over a training split at a batch size:

    iterations = epochs * ceil(n_train / batch)     (the last, partial batch counts as a step)

    python tools/pat_iterations.py --dataset oxford_pet_pat_train --epochs 100 --batch 8
    python tools/pat_iterations.py --images 5879 --epochs 100 --batch 8     # without the data

The dataset is read as training reads it (its PAT split file is written if it is not there yet).
"""
import argparse
import sys

from longtailseg.data import get_dataset_dicts_checked
from longtailseg.data.pat_protocol import iterations_for_epochs
from longtailseg.errors import LongTailSegError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="a registered training split, e.g. oxford_pet_pat_train")
    source.add_argument("--images", type=int, help="the number of training images, instead of --dataset")
    parser.add_argument("--epochs", type=int, default=100, help="epochs (PAT: 100)")
    parser.add_argument("--batch", type=int, required=True, help="SOLVER.IMS_PER_BATCH")
    args = parser.parse_args(argv)
    try:
        images = args.images if args.dataset is None else len(get_dataset_dicts_checked(args.dataset))
        iterations = iterations_for_epochs(args.epochs, images, args.batch)
    except (LongTailSegError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    per_epoch = iterations // args.epochs if args.epochs else 0
    print(f"{args.dataset or 'training set'}: {images} images, {args.epochs} epochs at batch {args.batch}: "
          f"SOLVER.MAX_ITER {iterations} ({per_epoch} iterations per epoch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
