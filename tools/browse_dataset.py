#!/usr/bin/env python
"""Look at a registered dataset: draw images of a split with their labels, and print its class
histogram with the head / body / tail groups.

Works on any dataset in Detectron2's DatasetCatalog / MetadataCatalog (the synthetic sets,
Detectron2's builtin ADE20K, Cityscapes and LVIS registrations when the data is on disk, your own
register_<family>.py), chosen by its metadata's evaluator_type: semantic segmentation draws the
class of every pixel with a legend of the classes present (colour, name, group, share of the
image); LVIS draws instances (masks, boxes, category names) with a legend of the categories
present and their r / c / f group. Drawings are Detectron2's Visualizer; each PNG holds the image
and its drawing side by side. --dataloader draws what the trainer's data loader yields (its
augmentations applied, as Detectron2's tools/visualize_data.py --source dataloader does).

The histogram is the project's class counting (tools/compute_class_stats.py): pixels per class
(semantic segmentation) or instances and images per category (LVIS), sorted by count, with the
group sizes and shares always shown and --top / --bottom rows of classes.

The command line of Detectron2's tools/visualize_data.py is accepted as well (--config-file,
--source annotation|dataloader, --output-dir, --show, KEY VALUE overrides), and
--detectron2-script runs Detectron2's own visualize_data.py on a LongTailSeg config, with the
project's config keys and datasets known to it.
"""
import argparse
import io
import os
import runpy
import sys
from itertools import chain

import numpy as np
from PIL import Image, ImageDraw
from tabulate import tabulate

import longtailseg  # noqa: F401  (compatibility checks, dataset registration)
from compute_class_stats import summary_table  # the table tools/compute_class_stats.py prints
from detectron2.data import detection_utils as utils
from detectron2.data.catalog import Metadata
from detectron2.structures import BoxMode
from detectron2.utils.visualizer import ColorMode, Visualizer
from longtailseg.data.class_counting import compute_class_stats
from longtailseg.data.datasets import check_dataset, get_dataset_dicts_checked, is_sem_seg_dataset
from longtailseg.data.labels import read_label
from longtailseg.errors import ConfigError, DatasetError, LongTailSegError, one_line
from longtailseg.io import write_bytes_atomically
from longtailseg.longtail import class_stats as cs

EXAMPLES = """examples:
  # 8 training images of the synthetic ADE20K-layout set, drawn 8x, and its class histogram
  python tools/browse_dataset.py --dataset synthetic_ade_sem_seg_train --output-dir output/browse
  # LVIS: images holding a rare (tail) category, and the 30 most frequent categories
  python tools/browse_dataset.py --dataset lvis_v1_train --group tail --top 30
  # the test split of a config, then what the trainer's data loader yields (augmentations applied)
  python tools/browse_dataset.py --config-file configs/synthetic/blv_deeplab.yaml --source test
  python tools/browse_dataset.py --config-file configs/synthetic/mask_rcnn_baseline.yaml --dataloader
  # Detectron2's visualize_data.py command line, or Detectron2's own script on our config
  python tools/browse_dataset.py --source annotation --config-file configs/ade20k/deeplab_v3_plus.yaml \\
      --output-dir output/browse
  python tools/browse_dataset.py --detectron2-script ~/detectron2/tools/visualize_data.py \\
      --source annotation --config-file configs/synthetic/deeplab_v3_plus.yaml --output-dir output/d2
"""
# Drawings are scaled up so that the shorter side is at least this many pixels: class names on a
# 64x64 synthetic image are unreadable otherwise.
_MIN_SHORT_SIDE = 512
_FONT_SIZE = 12
_LEGEND_ROW = 16
_LEGEND_WIDTH = 300


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", nargs="+", metavar="NAME",
                        help="registered dataset(s) to look at, e.g. synthetic_lvis_train (default: the "
                             "config's DATASETS.TRAIN or TEST, by --source)")
    parser.add_argument("--config-file", metavar="FILE",
                        help="a LongTailSeg config: its DATASETS.TRAIN / TEST, and the augmentations of --dataloader")
    parser.add_argument("--source", default="train", choices=["train", "test", "annotation", "dataloader"],
                        help="the config's DATASETS.TRAIN (train; annotation, as Detectron2 names it), "
                             "DATASETS.TEST (test), or the trainer's data loader on DATASETS.TRAIN "
                             "(dataloader, the same as --dataloader); default train")
    parser.add_argument("--dataloader", action="store_true",
                        help="draw what the trainer's data loader yields (augmentations applied; needs --config-file)")
    parser.add_argument("--output-dir", default="output/browse", metavar="DIR",
                        help="folder for the drawings, one PNG per image (default output/browse)")
    parser.add_argument("--num-images", type=int, default=8, metavar="N",
                        help="images to draw (default 8; -1: every image of the split; 0: none, histogram only)")
    parser.add_argument("--group", choices=cs.GROUP_NAMES,
                        help="draw only images holding a class of this group (e.g. tail), by the histogram's groups")
    parser.add_argument("--seed", type=int, default=0,
                        help="which images are drawn: a random sample with this seed (default 0; -1: the first N)")
    parser.add_argument("--scale", type=float,
                        help=f"drawing size relative to the image (default: so that the shorter side "
                             f"is at least {_MIN_SHORT_SIDE} pixels)")
    parser.add_argument("--top", type=int, default=20, metavar="K",
                        help="histogram: rows of the K most frequent classes (default 20; -1: every class)")
    parser.add_argument("--bottom", type=int, default=10, metavar="K",
                        help="histogram: rows of the K least frequent classes (default 10)")
    parser.add_argument("--no-histogram", action="store_true", help="draw images only, count nothing")
    parser.add_argument("--head-ratio", type=float,
                        help="semantic segmentation: head classes have a share above this (default: the "
                             "config's MODEL.LONG_TAIL.HEAD_RATIO, else 0.01)")
    parser.add_argument("--tail-ratio", type=float,
                        help="semantic segmentation: tail classes have a share at most this (default: the "
                             "config's MODEL.LONG_TAIL.TAIL_RATIO, else 0.001)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes counting label pixels")
    parser.add_argument("--show", action="store_true",
                        help="show each drawing in a window (OpenCV) instead of writing it, as Detectron2's script")
    parser.add_argument("--detectron2-script", metavar="PATH",
                        help="run this copy of Detectron2's tools/visualize_data.py with LongTailSeg's config "
                             "keys and datasets known (needs --config-file and --source annotation|dataloader; "
                             "its dataloader source draws instance sets only, until interrupted)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, after the options")
    return parser


# ---------------------------------------------------------------------------------------------
# Which datasets, from which config


def load_cfg(args):
    from longtailseg.engine import load_config

    if args.opts and not args.config_file:
        raise ConfigError(f"config overrides ({' '.join(args.opts[:2])} ...) need --config-file")
    cfg = load_config(args.config_file, args.opts, freeze=False)
    cfg.DATALOADER.NUM_WORKERS = 0  # as Detectron2's visualize_data.py: drawing is the slow part
    return cfg


def datasets_to_browse(args, cfg):
    if args.dataset:
        return list(args.dataset)
    if cfg is None:
        raise ConfigError("name a dataset (--dataset synthetic_ade_sem_seg_train) or a config (--config-file ...)")
    key = "TEST" if args.source == "test" else "TRAIN"
    names = list(cfg.DATASETS[key])
    if not names:
        raise ConfigError(f"DATASETS.{key} of {args.config_file} is empty; name a dataset with --dataset")
    return names


# ---------------------------------------------------------------------------------------------
# Histogram


def count(name, args, cfg):
    """The project's class statistics of ``name`` (any split: a histogram to look at)."""
    long_tail = cfg.MODEL.LONG_TAIL if cfg is not None else None
    head = args.head_ratio if args.head_ratio is not None else (
        long_tail.HEAD_RATIO if long_tail is not None else cs.DEFAULT_HEAD_RATIO)
    tail = args.tail_ratio if args.tail_ratio is not None else (
        long_tail.TAIL_RATIO if long_tail is not None else cs.DEFAULT_TAIL_RATIO)
    return compute_class_stats(name, head, tail, max(1, args.workers), progress=False, any_split=True)


def histogram_table(stats, top, bottom):
    """Classes by count, most frequent first: rank, id, name, group, count, share, images;
    ``top`` rows from the head end and ``bottom`` from the tail end (top < 0: every class)."""
    group_of = {c: g for g, ids in stats.groups.items() for c in ids}
    shares = stats.frequencies
    order = sorted(range(stats.num_classes), key=lambda c: (-stats.counts[c], c))
    bottom = max(bottom, 0)
    ranked = list(enumerate(order))
    hidden = 0 if top < 0 else max(len(order) - top - bottom, 0)
    shown = ranked if not hidden else ranked[:top] + [(None, None)] + ranked[len(order) - bottom:]
    rows = []
    for rank, c in shown:
        if c is None:
            rows.append(["...", "", f"({hidden} classes not shown: --top / --bottom)", "", "", "", ""])
            continue
        rows.append([rank + 1, c, stats.class_names[c], group_of.get(c, ""), f"{stats.counts[c]:,.0f}",
                     f"{100 * shares[c]:.3f}%", stats.image_counts[c]])
    return tabulate(rows, headers=["rank", "id", "class", "group", stats.unit, "share", "images"],
                    tablefmt="pipe", disable_numparse=True)


def print_histogram(stats):
    train = "train" in stats.dataset
    print(f"{stats.dataset}: {stats.num_classes} classes, {stats.num_images} images, "
          f"{sum(stats.counts):,.0f} {stats.unit}; groups by {stats.group_rule}"
          + ("" if train else " (of this split's own counts: training uses the training split's)"))
    print(summary_table(stats))


# ---------------------------------------------------------------------------------------------
# Drawing


def drawing_metadata(metadata, sem_seg):
    """The dataset's metadata with a colour for every class (fixed, so that the legend shows the
    colour drawn: Detectron2's Visualizer picks a random one for a class without)."""
    values = metadata.as_dict()
    key, classes = ("stuff_colors", values["stuff_classes"]) if sem_seg else ("thing_colors", values["thing_classes"])
    colors = values.get(key)
    if not colors or len(colors) < len(classes):
        rng = np.random.RandomState(0)
        values[key] = [tuple(int(v) for v in rng.randint(40, 256, 3)) for _ in classes]
    return Metadata(**values)


def read_image_rgb(path):
    try:
        return utils.read_image(path, format="RGB")
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist; restore it or remove it from the dataset "
                           "(datasets/README.md)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"image {path} cannot be read ({one_line(e)}); replace the file") from None


def legend_entries(record, metadata, stats, sem_seg):
    """(colour, text) per class in the drawn labels, most area (instances) first."""
    groups = {c: g for g, ids in stats.groups.items() for c in ids} if stats is not None else {}
    if sem_seg:
        label = record["sem_seg"]
        ids, areas = np.unique(label, return_counts=True)
        keep = ids < len(metadata.stuff_classes)
        ids, areas = ids[keep], areas[keep]
        order = np.argsort(-areas)
        return [(metadata.stuff_colors[ids[i]],
                 f"{metadata.stuff_classes[ids[i]]} {_tag(groups, ids[i])}{100 * areas[i] / label.size:.1f}%")
                for i in order]
    classes = [int(c) for c in record["classes"]]
    ids, numbers = np.unique(classes, return_counts=True) if classes else ([], [])
    order = np.argsort(-np.asarray(numbers)) if classes else []
    return [(metadata.thing_colors[ids[i]], f"{metadata.thing_classes[ids[i]]} {_tag(groups, ids[i])}x{numbers[i]}")
            for i in order]


def _tag(groups, c):
    return f"[{groups[c]}] " if c in groups else ""


def draw(image_rgb, record, metadata, scale, legend):
    """The image and its drawn labels side by side, a legend column at the right (HxWx3 RGB)."""
    visualizer = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.SEGMENTATION)
    # Detectron2 sizes class names by the image, not the drawing: none would be legible on a
    # 64x64 image drawn 8x (texts are drawn at font size x scale).
    visualizer._default_font_size = max(visualizer._default_font_size, _FONT_SIZE / scale)
    if "sem_seg" in record:
        drawn = visualizer.draw_sem_seg(record["sem_seg"], area_threshold=0, alpha=0.6).get_image()
    else:
        names = [metadata.thing_classes[int(c)] for c in record["classes"]]
        colors = [visualizer._jitter([v / 255 for v in metadata.thing_colors[int(c)]]) for c in record["classes"]]
        drawn = visualizer.overlay_instances(labels=names, boxes=record["boxes"], masks=record["masks"],
                                             assigned_colors=colors or None).get_image()
    raw = np.asarray(Image.fromarray(image_rgb).resize((drawn.shape[1], drawn.shape[0]), Image.NEAREST))
    height = max(drawn.shape[0], _LEGEND_ROW * (len(legend) + 1) + 8)
    panel = Image.new("RGB", (2 * drawn.shape[1] + 8 + _LEGEND_WIDTH, height), "white")
    panel.paste(Image.fromarray(raw), (0, 0))
    panel.paste(Image.fromarray(drawn), (drawn.shape[1] + 4, 0))
    pen = ImageDraw.Draw(panel)
    x = 2 * drawn.shape[1] + 12
    pen.text((x, 4), "class [group] share of the image" if "sem_seg" in record else
             "category [group] x instances", fill="black")
    for i, (color, text) in enumerate(legend):
        y = 4 + _LEGEND_ROW * (i + 1)
        pen.rectangle([x, y, x + 12, y + 11], fill=tuple(int(v) for v in color), outline="black")
        pen.text((x + 18, y), text, fill="black")
    return np.asarray(panel)


def annotation_records(dicts, sem_seg):
    """Records to draw from the dataset dicts as registered (no augmentation)."""
    for d in dicts:
        record = {"file_name": d["file_name"], "image": read_image_rgb(d["file_name"])}
        if sem_seg:
            record["sem_seg"] = read_label(d["sem_seg_file_name"])  # palette indices, as training reads them
        else:
            annotations = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
            record["classes"] = [a["category_id"] for a in annotations]
            record["boxes"] = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations]
            record["masks"] = [a["segmentation"] for a in annotations if "segmentation" in a] or None
            if record["masks"] is not None and len(record["masks"]) != len(annotations):
                record["masks"] = None
        yield record


def dataloader_records(cfg, limit):
    """Records from the trainer's training data loader (its mapper and augmentations)."""
    from longtailseg.engine.trainer import Trainer

    loader = Trainer.build_train_loader(cfg)
    drawn = 0
    for batch in loader:
        for per_image in batch:
            image = utils.convert_image_to_rgb(per_image["image"].permute(1, 2, 0).numpy(), cfg.INPUT.FORMAT)
            record = {"file_name": per_image["file_name"], "image": np.ascontiguousarray(image)}
            if "sem_seg" in per_image:
                record["sem_seg"] = per_image["sem_seg"].numpy()
            else:
                fields = per_image["instances"].get_fields()
                record["classes"] = fields["gt_classes"].tolist()
                record["boxes"] = fields.get("gt_boxes")
                record["masks"] = fields.get("gt_masks")
            yield record
            drawn += 1
            if limit >= 0 and drawn >= limit:
                return


def holds_group(record, stats, group, sem_seg):
    ids = set(stats.groups.get(group, []))
    present = np.unique(read_label(record["sem_seg_file_name"])) if sem_seg else \
        [a["category_id"] for a in record.get("annotations", [])]
    return any(int(c) in ids for c in present)


def choose(dicts, args, stats, sem_seg):
    """The dataset dicts to draw: a seeded random order (or the registered one), only those
    holding a class of --group, the first --num-images of them."""
    order = list(range(len(dicts)))
    if args.seed >= 0:
        np.random.RandomState(args.seed).shuffle(order)
    chosen = []
    for i in order:
        if args.num_images >= 0 and len(chosen) >= args.num_images:
            break
        if args.group and not holds_group(dicts[i], stats, args.group, sem_seg):
            continue
        chosen.append(dicts[i])
    return chosen


def output_name(record, index, dataloader, used):
    stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
    name = f"dataloader_{index:04d}_{stem}.png" if dataloader else f"{stem}.png"
    while name in used:  # two splits with an image of the same name
        name = f"{os.path.splitext(name)[0]}_{len(used)}.png"
    used.add(name)
    return name


def write_png(image_rgb, path):
    buffer = io.BytesIO()
    Image.fromarray(image_rgb).save(buffer, format="PNG")
    write_bytes_atomically(buffer.getvalue(), path)


def show(image_rgb, name):
    import cv2

    print(name)
    try:
        cv2.imshow("browse_dataset", image_rgb[:, :, ::-1])
        cv2.waitKey()
    except cv2.error as e:
        raise LongTailSegError(f"--show cannot open a window here ({one_line(e)}); "
                               "leave --show out to write PNGs to --output-dir") from None


# ---------------------------------------------------------------------------------------------
# Detectron2's own tools/visualize_data.py


def run_detectron2_script(args):
    """Run Detectron2's ``visualize_data.py`` unchanged, in this process: LongTailSeg's datasets are
    registered (imported above) and ``detectron2.config.get_cfg`` returns a config with
    LongTailSeg's keys while it runs, so that its ``cfg.merge_from_file`` reads our configs."""
    import detectron2.config
    from longtailseg.config import add_longtailseg_config

    path = os.path.expanduser(args.detectron2_script)
    if not os.path.isfile(path):
        raise LongTailSegError(f"--detectron2-script {path}: no such file; pass Detectron2's "
                               "tools/visualize_data.py (from a Detectron2 source checkout)")
    if not args.config_file or args.source not in ("annotation", "dataloader"):
        raise ConfigError("--detectron2-script takes Detectron2's own options: --config-file FILE and "
                          "--source annotation or dataloader")
    load_cfg(args)  # our one-line errors for the file and the overrides before Detectron2's traceback
    get_cfg = detectron2.config.get_cfg

    def get_cfg_with_longtailseg_keys():
        cfg = get_cfg()
        add_longtailseg_config(cfg)
        return cfg

    argv = ["--source", args.source, "--config-file", args.config_file, "--output-dir", args.output_dir]
    sys.argv = [path] + argv + (["--show"] if args.show else []) + list(args.opts)
    detectron2.config.get_cfg = get_cfg_with_longtailseg_keys
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        detectron2.config.get_cfg = get_cfg


# ---------------------------------------------------------------------------------------------


def main(args):
    if args.detectron2_script:
        return run_detectron2_script(args)
    if args.output_dir and os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise LongTailSegError(f"--output-dir {args.output_dir} is a file, not a folder; name a folder "
                               "for the drawings (it is created when missing)")
    dataloader = args.dataloader or args.source == "dataloader"
    if dataloader and not args.config_file:
        raise ConfigError("--dataloader draws the trainer's data loader of a config: pass --config-file")
    if dataloader and args.num_images < 0:
        raise ConfigError("the trainer's data loader never ends: give --dataloader a number of images (--num-images N)")
    if dataloader and args.group:
        raise ConfigError("--group picks images by their labels as registered; leave out --dataloader")
    cfg = load_cfg(args) if args.config_file else None
    names = datasets_to_browse(args, cfg)
    if dataloader:  # the loader reads DATASETS.TRAIN: the sets named here (--dataset, --source test)
        cfg.DATASETS.TRAIN = tuple(names)
    metadatas = [check_dataset(name) for name in names]  # one line for an unknown or incomplete set
    sem_seg = is_sem_seg_dataset(names[0])
    if any(is_sem_seg_dataset(name) != sem_seg for name in names):
        raise ConfigError(f"{', '.join(names)} mix semantic-segmentation and instance sets; look at one kind at a time")
    stats = {}
    if not args.no_histogram or args.group:
        for name in names:
            stats[name] = count(name, args, cfg)
    if not args.no_histogram:
        for name in names:
            print_histogram(stats[name])
            print(histogram_table(stats[name], args.top, args.bottom))
            print()
    if args.num_images == 0:
        return
    metadata = drawing_metadata(metadatas[0], sem_seg)
    if dataloader:
        records = dataloader_records(cfg, args.num_images)
    else:
        dicts = list(chain.from_iterable(get_dataset_dicts_checked(name) for name in names))
        records = annotation_records(choose(dicts, args, stats.get(names[0]), sem_seg), sem_seg)
    used, written = set(), 0
    for index, record in enumerate(records):
        scale = args.scale or max(1.0, _MIN_SHORT_SIDE / min(record["image"].shape[:2]))
        legend = legend_entries(record, metadata, stats.get(names[0]), sem_seg)
        drawing = draw(record["image"], record, metadata, scale, legend)
        name = output_name(record, index, dataloader, used)
        if args.show:
            show(drawing, name)
        else:
            write_png(drawing, os.path.join(args.output_dir, name))
        written += 1
    if not written and args.group:
        print(f"no image of {', '.join(names)} holds a {args.group} class: nothing drawn")
    elif not args.show:
        what = "the trainer's data loader" if dataloader else "the labels as registered"
        print(f"wrote {written} image(s) of {', '.join(names)} to {args.output_dir}/ ({what})")


def run(argv=None):
    args = get_parser().parse_args(argv)
    try:
        main(args)
    except LongTailSegError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
