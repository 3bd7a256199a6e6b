#!/usr/bin/env python
"""Train and evaluate a long-tail method on a semantic-segmentation dataset of your own, from your
own code: register the dataset as for any Detectron2 dataset, add LongTailSeg's config keys, and
train with the package's ``Trainer``, which resolves the class statistics and prints the
head / body / tail table itself.

The dataset is a folder holding

    classes.txt                  one class name per line (label value 0 is the first line)
    images/{train,val}/*.jpg     the images
    labels/{train,val}/*.png     single-channel labels of the same names, 255 = ignore

    python examples/train_own_dataset.py --root path/to/my_dataset --loss PAT --output output/my_pat
    python examples/train_own_dataset.py --root DIR SOLVER.MAX_ITER 100   # config overrides last
"""
import argparse
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg

from longtailseg.engine import Trainer, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def register_my_dataset(root, name="my_dataset"):
    """``my_dataset_train`` and ``my_dataset_val``, read with Detectron2's own sem-seg loader."""
    with open(os.path.join(root, "classes.txt")) as f:
        classes = [line.strip() for line in f if line.strip()]
    for split in ("train", "val"):
        images, labels = os.path.join(root, "images", split), os.path.join(root, "labels", split)
        DatasetCatalog.register(f"{name}_{split}",
                                lambda i=images, l=labels: load_sem_seg(l, i, gt_ext="png", image_ext="jpg"))
        MetadataCatalog.get(f"{name}_{split}").set(
            stuff_classes=classes, ignore_label=255, evaluator_type="sem_seg",
            image_root=images, sem_seg_root=labels)
    return classes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the dataset folder (see above)")
    parser.add_argument("--config-file", default=os.path.join(REPO, "configs", "synthetic", "deeplab_v3_plus.yaml"),
                        help="model and schedule (default: the thin DeepLabV3+ that trains on a CPU)")
    parser.add_argument("--loss", default="PAT", help="MODEL.LONG_TAIL.LOSS.NAME, e.g. CE, Focal, CB, BMS, LDAM, PAT")
    parser.add_argument("--output", default="output/my_dataset")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)

    classes = register_my_dataset(args.root)
    # Detectron2's config with LongTailSeg's keys (get_cfg() + add_longtailseg_config(cfg)), the
    # file read as data only (a YAML Python tag is refused).
    cfg = load_config(args.config_file, freeze=False)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("my_dataset_train",), ("my_dataset_val",)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(classes)
    cfg.MODEL.LONG_TAIL.LOSS.NAME = args.loss
    cfg.OUTPUT_DIR = args.output
    cfg.merge_from_list(args.opts)

    trainer = Trainer(cfg)  # class statistics counted into OUTPUT_DIR/class_stats.json
    trainer.resume_or_load(resume=False)
    trainer.train()  # ends with the evaluation: mIoU / mACC per class group, then per class
    return trainer


if __name__ == "__main__":
    main()
