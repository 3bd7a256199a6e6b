#!/usr/bin/env python
r"""Convert published ImageNet MiT (SegFormer encoder) weights into a checkpoint MODEL.WEIGHTS loads.

    python tools/convert_mit_weights.py mit_b3.pth pretrained/mit_b3.pth
    python tools/convert_mit_weights.py nvidia-mit-b3/model.safetensors pretrained/mit_b3.pth

Reads NVlabs' mit_b*.pth (the official release; smp-hub's copies have the same names), Hugging
Face's nvidia/mit-b* (pytorch_model.bin or model.safetensors, transformers 4 or 5 names) or an
mmsegmentation MiT checkpoint (--format to force one; default: detected from the names). Files
are read as data only (torch.load weights_only, or safetensors). The output is a Detectron2
checkpoint whose names are those of a model with MODEL.BACKBONE.NAME "build_mit_backbone"
(``backbone.mit.*``); the converted weights are first loaded strictly into a MiT of their shape,
and the variant they match (mit_b0 ... mit_b5) is printed: set MODEL.MIT.VARIANT to it.
"""
import argparse
import os
import sys

import torch

import longtailseg  # noqa: F401
from longtailseg.errors import LongTailSegError, one_line
from longtailseg.io import write_atomically
from longtailseg.modeling.mit import (
    MIT_WEIGHT_FORMATS,
    checkpoint_tensors,
    check_mit_weights,
    convert_mit_state_dict,
    detect_mit_weight_format,
    mit_weights_for_detectron2,
)
from longtailseg.safe_files import load_torch


def read_weights(path):
    """The tensors of ``path``: safetensors, or a torch file read with weights_only."""
    if not os.path.isfile(path):
        raise LongTailSegError(f"{path} does not exist; give the downloaded MiT weights file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return load_torch(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="published MiT weights (.pth, .bin, .safetensors)")
    parser.add_argument("output", help="Detectron2 checkpoint to write (.pth)")
    parser.add_argument("--format", default="auto", choices=("auto",) + MIT_WEIGHT_FORMATS,
                        help="the input's key format (default: detected)")
    args = parser.parse_args(argv)
    try:
        checkpoint = read_weights(args.input)
        if not isinstance(checkpoint, dict):
            raise LongTailSegError(f"{args.input} holds a {type(checkpoint).__name__}, not a dict of tensors")
        try:
            fmt = args.format if args.format != "auto" else detect_mit_weight_format(checkpoint_tensors(checkpoint))
            variant = check_mit_weights(convert_mit_state_dict(checkpoint, fmt))
            converted = mit_weights_for_detectron2(checkpoint, fmt)
        except ValueError as e:
            raise LongTailSegError(f"{args.input}: {one_line(e)}") from None
        write_atomically(args.output, lambda f: torch.save(converted, f), binary=True)
    except LongTailSegError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    shape = variant or "a custom shape (set MODEL.MIT.EMBED_DIMS / DEPTHS to match)"
    print(f"{args.input}: {fmt} format, {len(converted['model'])} tensors, MiT {shape}")
    print(f"wrote {args.output}; set MODEL.WEIGHTS to it" + (f" and MODEL.MIT.VARIANT {variant}" if variant else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
