#!/usr/bin/env python
"""Convert ADE20K's labels to Detectron2's: ``annotations/`` (0 = other, 1..150) ->
``annotations_detectron2/`` (0..149, 255 = ignore), as ``ade20k_sem_seg_*`` expects.

    python datasets/prepare_ade20k_sem_seg.py [--root $DETECTRON2_DATASETS]

Each PNG is written under a temporary name and renamed, so an interrupted run leaves no
half-written label; files already converted are skipped.
"""
import argparse
import os
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image
from tqdm import tqdm


def convert(job):
    source, target = job
    if os.path.exists(target):
        return
    label = np.asarray(Image.open(source)).astype(np.int64)
    converted = np.where(label == 0, 255, label - 1).astype(np.uint8)  # "other" -> ignore
    tmp = target + ".tmp.png"
    Image.fromarray(converted).save(tmp)
    os.replace(tmp, target)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    ade = os.path.join(args.root, "ADEChallengeData2016")
    if not os.path.isdir(os.path.join(ade, "annotations")):
        print(f"error: {ade}/annotations does not exist; unpack ADEChallengeData2016.zip into {args.root}",
              file=sys.stderr)
        return 2
    jobs = []
    for split in ("training", "validation"):
        source_dir = os.path.join(ade, "annotations", split)
        target_dir = os.path.join(ade, "annotations_detectron2", split)
        os.makedirs(target_dir, exist_ok=True)
        jobs += [(os.path.join(source_dir, f), os.path.join(target_dir, f))
                 for f in sorted(os.listdir(source_dir)) if f.endswith(".png")]
    with Pool(args.workers) as pool:
        for _ in tqdm(pool.imap_unordered(convert, jobs, chunksize=64), total=len(jobs), desc="ADE20K labels"):
            pass
    print(f"wrote {len(jobs)} labels under {ade}/annotations_detectron2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
