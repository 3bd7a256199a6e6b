#!/usr/bin/env python
"""Write Oxford-IIIT Pet's labels as PAT's three classes: ``annotations/trimaps/*.png`` (1 pet,
2 background, 3 not classified) -> ``annotations/trimaps_detectron2/*.png`` (0 background,
1 boundary, 2 body), as ``oxford_pet_*`` expects, and PAT's seeded 0.8 / 0.1 / 0.1 split of the
listed images to ``oxford_pet/pat_split_seed0.json``.

    python datasets/prepare_oxford_pet.py [--root $DETECTRON2_DATASETS]

Each PNG is written under a temporary name and renamed, so an interrupted run leaves no
half-written label; labels already written are skipped. A trimap holding another value, or a
missing folder, is one line and exit status 2.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

from longtailseg.data.datasets.register_oxford_pet import (
    LABEL_FOLDER,
    LIST_FILES,
    TRIMAP_FOLDER,
    read_list_file,
    trimap_to_label,
)
from longtailseg.data.pat_protocol import load_or_write_split, split_file_path
from longtailseg.errors import LongTailSegError


def convert(source, target):
    if os.path.exists(target):
        return
    try:
        with Image.open(source) as image:
            trimap = np.asarray(image)
    except OSError as e:
        raise LongTailSegError(f"{source} cannot be read as a PNG ({type(e).__name__}); unpack "
                               "annotations.tar.gz again") from None
    label = trimap_to_label(trimap, source)
    tmp = target + ".tmp"  # not *.png: a leftover is never read as a label
    Image.fromarray(label).save(tmp, format="PNG")
    os.replace(tmp, target)


def prepare(root, progress=True):
    folder = os.path.join(root, "oxford_pet")
    trimaps = os.path.join(folder, TRIMAP_FOLDER)
    if not os.path.isdir(trimaps):
        raise LongTailSegError(f"{trimaps} does not exist; unpack images.tar.gz and annotations.tar.gz "
                               f"into {folder} (datasets/README.md)")
    names = [n for list_file in LIST_FILES.values()
             for n in read_list_file(os.path.join(folder, "annotations", list_file))]
    target_dir = os.path.join(folder, LABEL_FOLDER)
    os.makedirs(target_dir, exist_ok=True)
    for name in tqdm(names, desc="Oxford-IIIT Pet labels", disable=not progress):
        source = os.path.join(trimaps, name + ".png")
        if not os.path.isfile(source):
            raise LongTailSegError(f"{source} does not exist but the split lists name {name}; unpack "
                                   "annotations.tar.gz again")
        convert(source, os.path.join(target_dir, name + ".png"))
    split = load_or_write_split(split_file_path(folder), names)
    return len(names), {k: len(v) for k, v in split.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="the folder holding oxford_pet/ (default $DETECTRON2_DATASETS)")
    args = parser.parse_args(argv)
    try:
        count, split = prepare(args.root)
    except LongTailSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {count} labels under {os.path.join(args.root, 'oxford_pet', LABEL_FOLDER)}; "
          f"PAT split {split['train']} / {split['val']} / {split['test']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
