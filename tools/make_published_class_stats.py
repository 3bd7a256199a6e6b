#!/usr/bin/env python
r"""Write the class statistics of the real training splits that ship with the package
(``longtailseg/data/class_stats_files/``, see ``longtailseg/data/published_stats.py``).

    python tools/make_published_class_stats.py \
        --ade20k-object-info ADEChallengeData2016/objectInfo150.txt \
        --lvis-v0.5-train lvis_v0.5_train.json --lvis-v1-train lvis_v1_train.json

The LVIS files may be the training jsons themselves or any json holding their ``categories``
(with ``image_count`` and ``instance_count``). Class names are taken from Detectron2's
registration of each split and checked against the sources. A source not given is skipped.
"""
import argparse
import os
import sys

import numpy as np

import longtailseg  # noqa: F401  (compatibility patches, dataset registration)
from detectron2.data import MetadataCatalog
from longtailseg.data import published_stats
from longtailseg.errors import ClassStatsError, LongTailSegError, one_line
from longtailseg.longtail import class_stats as cs

# Pixels per train id (road ... bicycle) over the 2975 gtFine training labels, and the ignored
# ones (train id 255): 2975 * 1024 * 2048 = 6,239,027,200 pixels in all. Counted with
# cityscapesscripts' labelTrainIds and published identically by several public repositories;
# `python tools/compute_class_stats.py --dataset cityscapes_fine_sem_seg_train` counts them again.
CITYSCAPES_TRAIN_PIXELS = (
    2036416525, 336090793, 1260636120, 36199498, 48454166, 67789506, 11477088, 30448193,
    879783988, 63949536, 221979646, 67326424, 7463162, 386328286, 14772328, 12990290,
    12863955, 5449152, 22861233,
)
CITYSCAPES_IGNORED_PIXELS = 715747311
CITYSCAPES_TRAIN_IMAGES = 2975
# Training images of LVIS (the papers' and lvisdataset.org's figures), for category-only sources.
LVIS_TRAIN_IMAGES = {"lvis_v0.5_train": 57263, "lvis_v1_train": 100170}


def class_names(dataset):
    metadata = MetadataCatalog.get(dataset)
    return list(getattr(metadata, "stuff_classes", None) or metadata.thing_classes)


def ade20k(object_info):
    dataset = "ade20k_sem_seg_train"
    info = cs.parse_ade20k_object_info(object_info)
    names = class_names(dataset)
    # Same order (Idx 1..150); Detectron2 shortens some names ("windowpane, window" -> "window").
    if len(info["names"]) != len(names):
        raise ClassStatsError(f"{object_info} lists {len(info['names'])} classes, Detectron2's {dataset} {len(names)}")
    ratios = np.asarray(info["ratios"])
    return cs.ClassStats(
        dataset=dataset, task="sem_seg", class_names=names, counts=ratios.tolist(),
        image_counts=info["train_images"],
        groups=cs.split_by_ratio(ratios, cs.DEFAULT_HEAD_RATIO, cs.DEFAULT_TAIL_RATIO),
        group_rule=(f"objectInfo150 Ratio as published (share of all pixels): head > "
                    f"{cs.DEFAULT_HEAD_RATIO:g}, tail <= {cs.DEFAULT_TAIL_RATIO:g}"),
        num_images=20210,
        source=("published: ADE20K objectInfo150.txt (SceneParsing benchmark, "
                "github.com/CSAILVision/sceneparsing), Ratio and Train columns"),
        extra={"all_pixels": 1.0},  # the Ratio column is already a share of all pixels
    )


def cityscapes():
    dataset = "cityscapes_fine_sem_seg_train"
    names = class_names(dataset)
    counts = np.asarray(CITYSCAPES_TRAIN_PIXELS, dtype=np.int64)
    all_pixels = int(counts.sum()) + CITYSCAPES_IGNORED_PIXELS
    assert all_pixels == CITYSCAPES_TRAIN_IMAGES * 1024 * 2048, "the published counts do not add up"
    return cs.ClassStats(
        dataset=dataset, task="sem_seg", class_names=names, counts=counts.tolist(),
        image_counts=[0] * len(names),
        groups=cs.split_by_ratio(counts / all_pixels, cs.DEFAULT_HEAD_RATIO, cs.DEFAULT_TAIL_RATIO),
        group_rule=(f"share of all training pixels (ignored included): head > {cs.DEFAULT_HEAD_RATIO:g}, "
                    f"tail <= {cs.DEFAULT_TAIL_RATIO:g}"),
        num_images=CITYSCAPES_TRAIN_IMAGES,
        source=("published: pixels per train id of the 2975 gtFine training labels (public counts; "
                "per-class image counts not published, stored as 0)"),
        extra={"all_pixels": all_pixels},
    )


def lvis(dataset, path):
    from longtailseg.safe_files import load_json

    data = load_json(path)
    categories = data["categories"] if isinstance(data, dict) else data
    categories = sorted(categories, key=lambda c: c["id"])
    names = class_names(dataset)
    # Detectron2 names a category by its first synonym (LVIS v1's "bull" is "horned_cow" there).
    if [c["synonyms"][0] for c in categories] != names:
        raise ClassStatsError(f"{path}: its categories are not those of Detectron2's {dataset}")
    return cs.ClassStats(
        dataset=dataset, task="instances", class_names=names,
        counts=[int(c["instance_count"]) for c in categories],
        image_counts=[int(c["image_count"]) for c in categories],
        groups=cs.split_by_lvis_frequency([c["frequency"] for c in categories]),
        group_rule="LVIS frequency field: f -> head, c -> body, r -> tail",
        num_images=len(data["images"]) if isinstance(data, dict) and "images" in data else LVIS_TRAIN_IMAGES[dataset],
        source=(f"published: instance_count and image_count of the categories of {dataset}.json "
                "(LVIS, lvisdataset.org)"),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ade20k-object-info", help="ADE20K's objectInfo150.txt")
    parser.add_argument("--lvis-v0.5-train", dest="lvis_v05", help="lvis_v0.5_train.json (or its categories)")
    parser.add_argument("--lvis-v1-train", dest="lvis_v1", help="lvis_v1_train.json (or its categories)")
    parser.add_argument("--no-cityscapes", action="store_true", help="leave the Cityscapes file as it is")
    parser.add_argument("--output-dir", default=published_stats.FILES_DIR,
                        help="where to write the files (default: the package's class_stats_files folder)")
    args = parser.parse_args(argv)
    made = []
    try:
        if args.ade20k_object_info:
            made.append(ade20k(args.ade20k_object_info))
        if not args.no_cityscapes:
            made.append(cityscapes())
        if args.lvis_v05:
            made.append(lvis("lvis_v0.5_train", args.lvis_v05))
        if args.lvis_v1:
            made.append(lvis("lvis_v1_train", args.lvis_v1))
        for stats in made:
            path = os.path.join(args.output_dir, published_stats.PUBLISHED_CLASS_STATS[stats.dataset])
            cs.save(stats, path)
            sizes = {g: len(ids) for g, ids in stats.groups.items()}
            print(f"wrote {path}: {stats.num_classes} classes, groups {sizes}")
    except (LongTailSegError, KeyError, OSError) as e:
        print(f"error: {one_line(e) if isinstance(e, LongTailSegError) else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
