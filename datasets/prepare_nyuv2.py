#!/usr/bin/env python
"""Write NYU Depth V2's 1449 labelled frames from the published ``nyu_depth_v2_labeled.mat``
(MATLAB v7.3 = HDF5, read with h5py) as the images and label PNGs ``nyuv2_*`` reads:

    nyuv2/images/0000.png ...      RGB, 640 x 480, in the .mat's order
    nyuv2/labels13/0000.png ...    0 unknown + the 13 classes (PAT's 14 categories)
    nyuv2/labels40/0000.png ...    the 40 classes 0..39, 255 = unlabelled
    nyuv2/pat_split_seed0.json     PAT's seeded 0.8 / 0.1 / 0.1 split of the frames

    python datasets/prepare_nyuv2.py [--root $DETECTRON2_DATASETS] [--mapping40 classMapping40.mat]

Both mappings go through the 894 -> 40 table of Gupta et al. (CVPR 2013), ``mapClass`` of
``classMapping40.mat`` from https://github.com/ankurhanda/nyuv2-meta-data. It is built in, as is
the 40 -> 13 table (``longtailseg/data/datasets/``); ``--mapping40`` (or a ``classMapping40.mat``
/ ``.txt`` beside the ``.mat``) replaces it: read with scipy when installed, or as a text file of
its numbers. Files are written under a temporary name and
renamed; frames already written are skipped. A missing or malformed input is one line and exit
status 2.
"""
import argparse
import os
import sys

from PIL import Image
from tqdm import tqdm

from longtailseg.data.datasets.register_nyuv2 import (
    MAT_FILE,
    LabeledMat,
    builtin_mapping40,
    frame_name,
    labels13,
    labels40,
    read_mapping40,
)
from longtailseg.data.pat_protocol import load_or_write_split, split_file_path
from longtailseg.errors import LongTailSegError


def _save(array, path):
    if os.path.exists(path):
        return
    tmp = path + ".tmp"  # not *.png: a leftover is never read as a frame
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


def prepare(root, mat=None, mapping40=None, progress=True):
    """Write the frames of ``mat`` (default ``root/nyuv2/nyu_depth_v2_labeled.mat``) under
    ``root/nyuv2``; returns (frames written, split sizes)."""
    folder = os.path.join(root, "nyuv2")
    mat = mat or os.path.join(folder, MAT_FILE)
    if not mapping40:
        candidates = [os.path.join(folder, f) for f in ("classMapping40.mat", "classMapping40.txt")]
        mapping40 = next((c for c in candidates if os.path.isfile(c)), None)
    with LabeledMat(mat) as data:
        if mapping40:
            lookup = read_mapping40(mapping40, len(data.names))
        else:
            lookup = builtin_mapping40(len(data.names), mat)
        outputs = {name: os.path.join(folder, name) for name in ("images", "labels13", "labels40")}
        for path in outputs.values():
            os.makedirs(path, exist_ok=True)
        names = []
        for index in tqdm(range(len(data)), desc="NYUv2 frames", disable=not progress):
            name = frame_name(index)
            targets = {k: os.path.join(v, name + ".png") for k, v in outputs.items()}
            if not all(os.path.exists(t) for t in targets.values()):
                raw = data.label(index)
                if raw.max() >= lookup.size:
                    raise LongTailSegError(f"{mat}: frame {index} holds the raw class {int(raw.max())} but "
                                           f"'names' has {lookup.size - 1} classes; download {MAT_FILE} again")
                _save(labels13(raw, lookup), targets["labels13"])
                _save(labels40(raw, lookup), targets["labels40"])
                _save(data.image(index), targets["images"])
            names.append(name)
    split = load_or_write_split(split_file_path(folder), names)
    return len(names), {k: len(v) for k, v in split.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="the folder holding nyuv2/ (default $DETECTRON2_DATASETS)")
    parser.add_argument("--mat", default=None, help=f"default ROOT/nyuv2/{MAT_FILE}")
    parser.add_argument("--mapping40", default=None,
                        help="classMapping40.mat (needs scipy) or a text file of its mapClass numbers; "
                             "default ROOT/nyuv2/classMapping40.{mat,txt} if present, else the built-in 894 -> 40 table")
    args = parser.parse_args(argv)
    try:
        count, split = prepare(args.root, args.mat, args.mapping40)
    except LongTailSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {count} frames under {os.path.join(args.root, 'nyuv2')}; "
          f"PAT split {split['train']} / {split['val']} / {split['test']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
