#!/usr/bin/env python
r"""Convert published ImageNet weights into a checkpoint MODEL.WEIGHTS loads into a config's backbone.

    # HRNet-W48 / ResNeSt-101: timm's release of the model MODEL.TIMM.NAME names
    python tools/convert_pretrained_weights.py --config-file configs/ade20k/ocrnet_hrnet_w48.yaml \
        --input hrnet_w48.ms_in1k/model.safetensors --output pretrained/hrnet_w48_ms_in1k.pth
    # ResNet-50c / 101c (deep stem): timm's resnet50c.gluon_in1k or mmcv's resnet50_v1c
    python tools/convert_pretrained_weights.py --config-file configs/ade20k/deeplab_v3_plus_R_50c.yaml \
        --input resnet50_v1c-2cccc1ad.pth --output pretrained/resnet50c.pth

The config's backbone (MODEL.BACKBONE.NAME, MODEL.TIMM or MODEL.RESNETS) says what to fill: every
one of its parameters and buffers must come from the file with its shape, else the tool stops with
one line naming what does not fit. The output holds the model's names (``backbone....``) and is read
by Detectron2's checkpointer like its own ImageNet .pkl files (which need no conversion: MSRA R-50 /
R-101, DeepLab's R-103). Point the config's MODEL.WEIGHTS at it (the shipped configs name
``pretrained/<file>.pth``). Input formats: timm (.pth, .bin, .safetensors), mmcv (``state_dict``
wrapper, ``stem.N`` names), torchvision; --layout forces one for ResNets. Files are read as data
only (torch.load weights_only, safetensors).
"""
import argparse
import sys

import torch

import longtailseg  # noqa: F401  (registers the backbones)
from longtailseg.engine import load_config
from longtailseg.errors import LongTailSegError, one_line
from longtailseg.io import write_atomically
from longtailseg.modeling.backbone.weight_conversion import (
    LAYOUTS,
    convert_for_backbone,
    read_published_weights,
)

from detectron2.modeling import build_backbone


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the config whose backbone the weights are for")
    parser.add_argument("--input", required=True, help="the published weights file")
    parser.add_argument("--output", required=True, help="the converted checkpoint (.pth)")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS,
                        help="ResNet key layout of --input (default: recognised from its keys)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts)
        backbone = build_backbone(cfg)
        state = read_published_weights(args.input)
        converted = convert_for_backbone(backbone, cfg, state, args.layout, source_name=args.input)
        checkpoint = {"model": converted, "__author__": f"LongTailSeg conversion of {args.input}",
                      "matching_heuristics": False}
        write_atomically(args.output, lambda f: torch.save(checkpoint, f), binary=True)
    except LongTailSegError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    count = sum(v.numel() for v in converted.values())
    print(f"{args.input}: {len(converted)} tensors ({count:,} numbers) of {cfg.MODEL.BACKBONE.NAME}; "
          f"wrote {args.output} (set MODEL.WEIGHTS to it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
