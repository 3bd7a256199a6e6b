#!/usr/bin/env python
"""Draw a trained model's predictions on your own images (Detectron2's demo/demo.py for LongTailSeg).

Semantic segmentation models draw the predicted class of every pixel, LVIS Mask R-CNN models
their detections (masks, boxes, class names and scores), with Detectron2's Visualizer and the
class names and colours of the config's DATASETS.TEST[0]. One PNG per input image is written to
--output (same file name, .png). With --experts, a MEDOE model draws each expert's prediction
beside the ensemble's.
"""
import argparse
import glob
import io
import os
import re
import sys
import tempfile

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from tqdm import tqdm

from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer

from longtailseg.data import prepare_dataset
from longtailseg.engine import build_model, load_config, resolve_class_stats
from longtailseg.engine.weights import ensure_weights_available
from longtailseg.errors import ConfigError, LongTailSegError, one_line
from longtailseg.io import write_bytes_atomically
from longtailseg.longtail.experts import expert_probabilities
from longtailseg.modeling.sem_seg.medoe import MEDOEHead

EXAMPLES = """examples:
  # the `make demo` model on the synthetic validation images (64x64, drawn 4x larger)
  python tools/demo.py --config-file configs/synthetic/deeplab_v3_plus.yaml \\
      --input 'datasets/synthetic/ADEChallengeData2016/images/validation/*.jpg' \\
      --output output/demo --scale 4 \\
      MODEL.WEIGHTS output/synthetic/deeplab_v3_plus/model_final.pth
  # a MEDOE model: the ensemble and each expert side by side
  python tools/demo.py --config-file configs/synthetic/medoe_deeplab.yaml --input img.jpg \\
      --experts --opts MODEL.WEIGHTS output/synthetic/medoe_deeplab/model_final.pth
"""
# A config key on the command line: SOLVER.MAX_ITER, MODEL.WEIGHTS ...
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")
_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_TITLE_HEIGHT = 14


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files or quoted glob patterns ('dir/*.jpg')")
    parser.add_argument("--output", default="output/demo",
                        help="folder for the drawn images (default: output/demo)")
    parser.add_argument("--experts", action="store_true",
                        help="MEDOE models: draw each expert's prediction beside the ensemble's")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="instance segmentation: draw detections scoring at least this (default 0.5)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="size of the drawing relative to the image (default 1; 4 for 64x64 images)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth "
                             "(also accepted without --opts, after the other options)")
    return parser


def parse_args(argv=None):
    """Arguments, with trailing ``KEY VALUE`` overrides (as tools/train_net.py takes them) moved
    into ``opts``: --input takes every word, so the first config key ends it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--opts" not in argv:
        end = next((i for i, word in enumerate(argv)
                    if _CONFIG_KEY.match(word) and not os.path.exists(word)), len(argv))
        if end < len(argv):
            argv = argv[:end] + ["--opts"] + argv[end:]
    return get_parser().parse_args(argv)


def expand_inputs(patterns):
    """Image paths from file names and glob patterns; a missing file or an empty pattern is an
    error naming it."""
    paths = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if _GLOB_CHARACTERS.search(pattern) and not os.path.exists(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise LongTailSegError(f"--input {pattern!r} matches no file")
            paths.extend(matches)
        elif not os.path.isfile(pattern):
            raise LongTailSegError(f"--input {pattern}: no such file")
        else:
            paths.append(pattern)
    return paths


def output_paths(inputs, folder):
    """``folder/<name>.png`` per input; two inputs of the same name are refused."""
    outputs = {}
    for path in inputs:
        out = os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + ".png")
        if out in outputs.values():
            other = next(p for p, o in outputs.items() if o == out)
            raise LongTailSegError(f"--input {path} and {other} would both be drawn to {out}; "
                                   "run them with different --output folders")
        outputs[path] = out
    return outputs


def setup_cfg(args, class_stats_dir):
    """The config with the overrides, weights checked and class statistics resolved (into
    ``class_stats_dir``; the statistics file beside MODEL.WEIGHTS is reused when there is one)."""
    cfg = load_config(args.config_file, args.opts, freeze=False)
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise ConfigError("MODEL.WEIGHTS is empty; pass the trained model, e.g. "
                          "MODEL.WEIGHTS output/synthetic/deeplab_v3_plus/model_final.pth")
    if "://" not in weights and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS={weights} does not exist; train the model first "
                          f"(python tools/train_net.py --config-file {args.config_file}) or fix the path")
    ensure_weights_available(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    for dataset in cfg.DATASETS.TRAIN[:1] + cfg.DATASETS.TEST[:1]:
        prepare_dataset(dataset)  # class names: a one-line error when their file is missing
    cfg.OUTPUT_DIR = class_stats_dir
    resolve_class_stats(cfg)
    cfg.freeze()
    return cfg


class Predictor:
    """Detectron2's DefaultPredictor for the model tools/train_net.py evaluates (second stages
    included); with ``experts`` the MEDOE head also returns every expert's probabilities."""

    def __init__(self, cfg, experts=False):
        self.model = build_model(cfg).eval()  # weights of another model are refused
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.num_experts = 0
        if experts:
            head = getattr(self.model, "sem_seg_head", None)
            if not isinstance(head, MEDOEHead):
                raise ConfigError("--experts draws the experts of a MEDOE model, but the config's "
                                  f"MODEL.SEM_SEG_HEAD.NAME is {cfg.MODEL.SEM_SEG_HEAD.NAME!r}; "
                                  "use a MEDOE config (configs/*/medoe_deeplab*.yaml)")
            self.num_experts = head.num_experts
            self.ensemble = "expert 1" if head.ensemble == "none" else head.ensemble
            head.register_forward_hook(_append_expert_probabilities)

    @torch.no_grad()
    def __call__(self, image_bgr):
        """Predictions for one HxWx3 BGR uint8 image; ``experts`` (K, C, H, W) when asked."""
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        inputs = {"image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)),
                  "height": height, "width": width}
        predictions = self.model([inputs])[0]
        if self.num_experts:
            # The head returned the ensemble and the experts stacked on the class axis, so the
            # segmentor cropped and resized them all alike.
            stacked = predictions["sem_seg"]
            predictions["sem_seg"], *experts = stacked.chunk(self.num_experts + 1, dim=0)
            predictions["experts"] = torch.stack(experts)
        return predictions


def _append_expert_probabilities(head, inputs, output):
    """Forward hook of MEDOEHead at inference: the ensemble's probabilities, then each expert's
    softmax over its own classes, concatenated along the class axis."""
    features = inputs[0]
    probabilities, losses = output
    experts = expert_probabilities(head.expert_logits(features), head.expert_masks)
    return torch.cat([probabilities, *experts], dim=1), losses


def draw(image_rgb, predictions, metadata, args, ensemble="ensemble"):
    """The drawing of one image's predictions (HxWx3 RGB uint8); with experts, the model's
    prediction (titled ``ensemble``) and each expert's, side by side."""
    def visualizer():
        return Visualizer(image_rgb, metadata, scale=args.scale, instance_mode=ColorMode.SEGMENTATION)

    if "instances" in predictions:
        instances = predictions["instances"].to("cpu")
        instances = instances[instances.scores >= args.confidence_threshold]
        return visualizer().draw_instance_predictions(instances).get_image()
    drawing = visualizer().draw_sem_seg(predictions["sem_seg"].argmax(dim=0).cpu()).get_image()
    if "experts" not in predictions:
        return drawing
    panels = [_titled(drawing, f"MEDOE ({ensemble})")]
    for k, probabilities in enumerate(predictions["experts"]):
        expert = visualizer().draw_sem_seg(probabilities.argmax(dim=0).cpu()).get_image()
        panels.append(_titled(expert, f"expert {k + 1}"))
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)


def _titled(image, title):
    """``image`` under a white band holding ``title``."""
    band = Image.new("RGB", (image.shape[1], _TITLE_HEIGHT), "white")
    ImageDraw.Draw(band).text((3, 1), title, fill="black")
    return np.concatenate([np.asarray(band), image], axis=0)


def read_input_image(path):
    """HxWx3 BGR uint8, or a one-line error naming the file."""
    try:
        image = read_image(path, format="BGR")
    except UnidentifiedImageError:
        reason = "not an image format Pillow reads"
    except (OSError, ValueError, SyntaxError) as e:  # e.g. a truncated file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    else:
        return image
    raise LongTailSegError(f"cannot read image {path} ({reason}); pass JPEG or PNG files")


def write_png(image_rgb, path):
    buffer = io.BytesIO()
    Image.fromarray(image_rgb).save(buffer, format="PNG")
    write_bytes_atomically(buffer.getvalue(), path)


def check_output_folder(folder):
    """--output must be a folder (made when missing): an existing file there is refused before
    the model is built, not after the first drawing."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise LongTailSegError(f"--output {folder} is a file, not a folder; name a folder for the "
                               "drawings (it is created when missing)")


def main(args):
    check_output_folder(args.output)
    inputs = expand_inputs(args.input)
    outputs = output_paths(inputs, args.output)
    with tempfile.TemporaryDirectory(prefix="longtailseg-demo-") as class_stats_dir:
        cfg = setup_cfg(args, class_stats_dir)
        dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else cfg.DATASETS.TRAIN[0]
        metadata = prepare_dataset(dataset)  # class names and colours
        predictor = Predictor(cfg, experts=args.experts)
    for path in tqdm(inputs, desc="drawing", disable=len(inputs) < 2):
        image_bgr = read_input_image(path)
        predictions = predictor(image_bgr)
        drawing = draw(image_bgr[:, :, ::-1], predictions, metadata, args,
                       getattr(predictor, "ensemble", None))
        write_png(drawing, outputs[path])
    print(f"wrote {len(inputs)} image(s) to {args.output}/ (classes and colours of {dataset})")


def run(argv=None):
    args = parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="longtailseg")
    try:
        main(args)
    except LongTailSegError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
