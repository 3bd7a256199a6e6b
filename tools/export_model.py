#!/usr/bin/env python
"""Export a trained model to TorchScript or ONNX (Detectron2's tools/deploy/export_model.py, tracing
method, for LongTailSeg's models).

The model's own inference is traced at one fixed input size (``--size``, default
INPUT.MIN_SIZE_TEST square): semantic segmentation with any decode head and backbone, DisAlign's
calibration in the graph, MEDOE with its configured ensemble (MOE included), and the LVIS Mask
R-CNN (boxes, classes, scores, ROI masks). Dropout is removed and BLV exists only in training, so
no training-only op is exported. The exported model takes one image (3, H, W), float32, 0-255,
channels in INPUT.FORMAT order, of exactly the traced size. After writing, the tool runs the
exported model (TorchScript, or onnxruntime on the CPU) and the PyTorch model on a second image
and reports their largest difference in OUTPUT/export_info.json; it fails (exit 1) above
--tolerance, or when the graph holds a dropout or random op. Bad input is one line, exit 2.

Details: longtailseg/engine/export.py; how to run an exported model: GETTING_STARTED.md#export.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import torch

from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from PIL import Image, UnidentifiedImageError

from longtailseg.data import prepare_dataset
from longtailseg.engine import export as ex
from longtailseg.engine import load_config, resolve_class_stats
from longtailseg.engine.weights import ensure_weights_available
from longtailseg.errors import LongTailSegError, one_line
from longtailseg.io import write_json_atomically

EXAMPLES = """examples:
  python tools/export_model.py --config-file configs/synthetic/deeplab_v3_plus.yaml \\
      --format onnx --output output/export/deeplab \\
      MODEL.WEIGHTS output/synthetic/deeplab_v3_plus/model_final.pth
  python tools/export_model.py --config-file configs/ade20k/medoe_deeplab_moe.yaml --size 512 512 \\
      --format torchscript --output output/export/medoe MODEL.WEIGHTS medoe_moe/model_final.pth
"""


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--format", choices=ex.FORMATS, default="torchscript", help="default: torchscript")
    parser.add_argument("--export-method", choices=["tracing"], default="tracing",
                        help="as Detectron2's tool; only tracing (scripting needs per-model code)")
    parser.add_argument("--output", required=True, help="folder for model.ts / model.onnx and export_info.json")
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="the fixed input size (default: INPUT.MIN_SIZE_TEST x INPUT.MIN_SIZE_TEST)")
    parser.add_argument("--sample-image", metavar="FILE",
                        help="an image to trace with, resized to --size (default: random pixels)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest difference from PyTorch's output accepted (default 1e-3)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth")
    return parser


def setup_cfg(args, class_stats_dir):
    """The config on the CPU, the weights checked, class statistics resolved (the file beside
    MODEL.WEIGHTS is reused when there is one; the model's class groups and counts need them)."""
    cfg = load_config(args.config_file, args.opts, freeze=False)
    ex.check_exportable(cfg, args.format)
    ex.check_weights(cfg)
    ensure_weights_available(cfg)
    cfg.MODEL.DEVICE = "cpu"  # traced on the CPU; the exported model runs anywhere
    for dataset in cfg.DATASETS.TRAIN[:1] + cfg.DATASETS.TEST[:1]:
        prepare_dataset(dataset)
    cfg.OUTPUT_DIR = class_stats_dir
    resolve_class_stats(cfg)
    cfg.freeze()
    return cfg


def input_images(cfg, args):
    """(image to trace with, another image to check with), each (3, H, W) float32 0-255."""
    height, width = args.size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    if height < 1 or width < 1:
        raise LongTailSegError(f"--size {height} {width}: give a positive height and width")
    generator = torch.Generator().manual_seed(0)
    random_images = [torch.randint(0, 256, (3, height, width), generator=generator).float() for _ in range(2)]
    if not args.sample_image:
        return random_images
    try:
        image = read_image(args.sample_image, format=cfg.INPUT.FORMAT)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise LongTailSegError(f"cannot read --sample-image {args.sample_image} ({one_line(e)}); "
                               "pass a JPEG or PNG file") from None
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)), random_images[1]


def main(args):
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise LongTailSegError(f"--output {args.output} is a file; name a folder (created when missing)")
    with tempfile.TemporaryDirectory(prefix="longtailseg-export-") as class_stats_dir:
        cfg = setup_cfg(args, class_stats_dir)
        model = ex.exportable_model(cfg, args.format)
    trace_image, check_image = input_images(cfg, args)
    path, adapter = ex.export(model, trace_image, args.format, args.output)
    difference = ex.max_difference(ex.eager_outputs(adapter, check_image), ex.load_exported(path)(check_image))
    training_ops = ex.training_only_ops(path)
    info = {
        "format": args.format,
        "file": os.path.basename(path),
        "config_file": args.config_file,
        "weights": cfg.MODEL.WEIGHTS,
        "input": {"name": "image", "shape": list(trace_image.shape), "dtype": "float32",
                  "range": [0, 255], "channels": cfg.INPUT.FORMAT},
        "outputs": ex.output_names(adapter),
        "max_abs_difference_from_pytorch": difference,
        "training_only_ops": training_ops,
    }
    write_json_atomically(info, os.path.join(args.output, "export_info.json"))
    print(f"wrote {path}: input image {tuple(trace_image.shape)} ({cfg.INPUT.FORMAT}, 0-255); "
          f"largest difference from PyTorch {difference:.3g}")
    if training_ops:
        raise ex.ExportCheckError(f"the exported graph holds training-only ops {training_ops}")
    if not difference <= args.tolerance:
        raise ex.ExportCheckError(f"the exported model's output differs from PyTorch's by {difference:.3g} "
                                  f"(> --tolerance {args.tolerance:g})")


def run(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="longtailseg")
    try:
        main(args)
    except ex.ExportCheckError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(1)
    except LongTailSegError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
