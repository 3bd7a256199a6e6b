#!/usr/bin/env python
"""Create Cityscapes' ``*_gtFine_labelTrainIds.png`` (19 classes, 255 ignore) with the official
cityscapesscripts, as ``cityscapes_fine_sem_seg_*`` expects.

    python datasets/prepare_cityscapes_sem_seg.py [--root $DETECTRON2_DATASETS]
"""
import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"))
    args = parser.parse_args(argv)
    cityscapes = os.path.abspath(os.path.join(args.root, "cityscapes"))
    if not os.path.isdir(os.path.join(cityscapes, "gtFine")):
        print(f"error: {cityscapes}/gtFine does not exist; unpack gtFine_trainvaltest.zip and "
              f"leftImg8bit_trainvaltest.zip into {cityscapes}", file=sys.stderr)
        return 2
    os.environ["CITYSCAPES_DATASET"] = cityscapes  # read by cityscapesscripts at import
    from cityscapesscripts.preparation import createTrainIdLabelImgs

    createTrainIdLabelImgs.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
