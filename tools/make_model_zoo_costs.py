#!/usr/bin/env python
r"""Measure the cost columns of MODEL_ZOO.md (as Detectron2's and mmsegmentation's zoos give them:
train time per iteration, inference time per image, training memory, plus parameters and
inference FLOPs) with tools/benchmark_training.py, and write them into MODEL_ZOO.md's cost table.

    python tools/make_model_zoo_costs.py --size 128 --batch 2 \
        configs/ade20k/deeplab_v3_plus_R_50.yaml configs/ade20k/blv_deeplab.yaml

Each config is timed alone (a training step: forward, backward and optimizer step on --batch
random images of --size pixels; inference: one image in evaluation mode), randomly initialised.
The table says which machine and size the numbers come from: on a CPU they rank configs, they
are not the GPU figures of the papers. Rows of configs measured before and not given again are
kept; --replace starts the table anew.
"""
import argparse
import json
import os
import platform
import re
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_training  # noqa: E402  (tools/benchmark_training.py)

from longtailseg.errors import ConfigError, LongTailSegError, one_line  # noqa: E402
from longtailseg.io import write_text_atomically  # noqa: E402

BEGIN = "<!-- cost table: written by tools/make_model_zoo_costs.py -->"
END = "<!-- end of cost table -->"
HEADER = ("| config | train s/iter | inference s/image | train memory (MiB) | parameters | "
          "GFLOPs (1 image) |\n|---|---|---|---|---|---|")


def machine():
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{device}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
            f"load average {load:.1f} when the table was written")


def measure(config, size, batch, iters, opts):
    """(train s/iter, inference s/image, train peak MiB, parameters, inference FLOPs) of one config."""
    with tempfile.TemporaryDirectory(prefix="zoo_costs_") as folder:
        train_json, infer_json = os.path.join(folder, "train.json"), os.path.join(folder, "infer.json")
        common = ["--config-file", config, "--size", str(size), "--iters", str(iters), "--warmup", "1"]
        if benchmark_training.main(common + ["--batch", str(batch), "--no-flops", "--json", train_json] + opts):
            raise ConfigError(f"{config}: the training benchmark failed (its error is above)")
        if benchmark_training.main(common + ["--inference", "--batch", "1", "--json", infer_json] + opts):
            raise ConfigError(f"{config}: the inference benchmark failed (its error is above)")
        with open(train_json) as f:
            train = json.load(f)[0]
        with open(infer_json) as f:
            infer = json.load(f)[0]
    return (train["median_s"], infer["median_s"], train["peak_mem_mb"], train["params"], infer["inference_flops"])


def row(config, values):
    train_s, infer_s, memory, params, flops = values
    return (f"| `{config}` | {train_s:.3g} | {infer_s:.3g} | {memory:.0f} | {params / 1e6:.1f} M | "
            f"{flops / 1e9:.3g} |")


def existing_rows(text):
    if BEGIN not in text:
        return {}
    table = text.split(BEGIN, 1)[1].split(END, 1)[0]
    return {m.group(1): line for line in table.splitlines()
            if (m := re.match(r"\| `([^`]+)` \|", line))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="config files to measure (paths under configs/)")
    parser.add_argument("--size", type=int, default=128, help="side of the square random images (default: 128)")
    parser.add_argument("--batch", type=int, default=2, help="images per training step (default: 2)")
    parser.add_argument("--iters", type=int, default=3, help="timed steps per config (default: 3)")
    parser.add_argument("--model-zoo", default="MODEL_ZOO.md", help="the file whose cost table is written")
    parser.add_argument("--replace", action="store_true", help="drop the rows of configs not measured now")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE",
                        help="config overrides for every config, e.g. --opts MODEL.DEVICE cpu")
    args = parser.parse_args(argv)
    try:
        with open(args.model_zoo, encoding="utf-8") as f:
            text = f.read()
        rows = {} if args.replace else existing_rows(text)
        for config in args.configs:
            name = os.path.relpath(os.path.abspath(config), os.path.abspath("configs")).replace(os.sep, "/")
            rows[name] = row(name, measure(config, args.size, args.batch, args.iters, args.opts))
            print(rows[name])
    except (LongTailSegError, OSError) as e:
        print(f"error: {one_line(e) if isinstance(e, LongTailSegError) else e}", file=sys.stderr)
        return 2
    note = (f"Measured by `tools/make_model_zoo_costs.py` on {machine()}: training steps of batch {args.batch} "
            f"and inference of one image, {args.size}x{args.size} random images, random weights, median of "
            f"{args.iters} steps. **CPU figures at a reduced size**: they rank the configs; the papers' GPU "
            "figures at full size are not these. Memory: the process's peak resident memory during the "
            "training steps (model, optimizer, activations and the runtime).")
    table = "\n".join([BEGIN, "", note, "", HEADER] + [rows[k] for k in sorted(rows)] + ["", END])
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + table + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Cost of each config\n\n" + table + "\n"
    write_text_atomically(text, args.model_zoo)
    print(f"wrote the cost table of {args.model_zoo} ({len(rows)} configs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
