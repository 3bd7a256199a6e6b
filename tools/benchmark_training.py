#!/usr/bin/env python
"""Seconds per training step (or per inference) and peak memory of config variants, relative to
the first one, on random batches: no dataset, no checkpoint.

    python tools/benchmark_training.py \\
        --config-file configs/ade20k/deeplab_v3_plus_R_50.yaml \\
        --config-file configs/ade20k/blv_deeplab.yaml \\
        --config-file configs/ade20k/medoe_deeplab.yaml \\
        --size 128 --iters 5 --json bench.json  [KEY VALUE ...]

    python tools/benchmark_training.py --inference \\
        --config-file configs/ade20k/deeplab_v3_plus_R_50.yaml \\
        --config-file configs/ade20k/medoe_deeplab.yaml \\
        --config-file configs/ade20k/medoe_deeplab_moe.yaml --size 128

Each --config-file is one variant (the first is the reference of the ratio column); the KEY
VALUE overrides at the end apply to every variant. Every model is built with the same seed and
randomly initialised (MODEL.WEIGHTS is not loaded), so variants of one architecture share their
backbone weights. The optimizer steps at learning rate 0: the weights stay fixed, so a Mask
R-CNN's proposals are the same for every variant and random weights cannot diverge. A second
stage (DisAlign, MEDOE's MOE) is frozen as tools/train_net.py freezes it, without the stage-1
weights check. A config that needs class statistics but names no MODEL.LONG_TAIL.CLASS_STATS
file gets a synthetic long-tailed profile of its class count (said in the output). A training
step is forward + backward + optimizer step; --inference times the model in evaluation mode
without gradients, as the evaluator runs it.

Warm-up steps run first; then the variants are timed round-robin (every round runs each
variant once on that round's batch), so that a shared machine's drift falls on all of them
alike. The table gives the median seconds per step, its ratio to the first variant, and the
peak memory of the variant's steps: CUDA's peak allocated memory on a GPU, else the process's
peak resident memory during the variant's steps (which includes every model built and the
runtime). --backbone-forward adds a row: the first variant's backbone alone, forward without
gradient on the same batches, the floor of any step that computes its features (a second stage
with a frozen backbone cannot cost less). Images are squares of --size pixels (default: the
config's training crop or largest training size; its test size with --inference). Runs on CPU when CUDA is absent, even if the
config names a GPU device.
"""
import argparse
import os
import statistics
import sys
import tempfile

import torch
from tabulate import tabulate
from tqdm import tqdm

import longtailseg  # noqa: F401  (registers datasets, heads and evaluators)
from longtailseg.engine import class_stats_needed, load_config, stage2
from longtailseg.engine.analysis import count_inference_flops
from longtailseg.engine.defaults import build_model_and_count
from longtailseg.engine.optimizer import build_optimizer  # SOLVER.OPTIMIZER, as the Trainer
from longtailseg.modeling.extension_points import model_needs_class_stats
from longtailseg.engine.timing import peak_rss_bytes, reset_peak_rss, round_robin_times
from longtailseg.errors import LongTailSegError, one_line
from longtailseg.io import write_json_atomically
from longtailseg.longtail import class_stats as cs

from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.structures import BitMasks, Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage


IGNORE_SHARE = 0.05  # share of ignored pixels in random semantic labels
INSTANCES_PER_IMAGE = 10  # about LVIS's mean (11.2 per training image)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", action="append", required=True, metavar="FILE",
                        help="a variant's config; repeat for each variant, the first is the reference")
    parser.add_argument("--name", action="append", default=[], metavar="NAME",
                        help="a variant's name in the table, in --config-file order "
                             "(default: the config file's name)")
    parser.add_argument("--inference", action="store_true",
                        help="time inference (evaluation mode, no gradient) instead of training steps")
    parser.add_argument("--size", type=int, default=None,
                        help="side of the square random images (default: from the config)")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per step (default: 2 for training, 1 for inference)")
    parser.add_argument("--iters", type=int, default=15, help="timed steps per variant (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches")
    parser.add_argument("--backbone-forward", action="store_true",
                        help="also time the first variant's backbone alone (forward without gradient, "
                             "on the same batches): the least a step that computes features can cost, "
                             "e.g. a second stage whose backbone is frozen")
    parser.add_argument("--no-flops", action="store_true",
                        help="do not count the inference FLOPs (fvcore traces one forward per variant)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help='write [{"name", "median_s", "ratio", "peak_mem_mb", ...}] in variant order '
                             "(the backbone-forward row last)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides for every variant, after all --options")
    args = parser.parse_args(argv)
    if args.name and len(args.name) != len(args.config_file):
        parser.error(f"{len(args.name)} --name for {len(args.config_file)} --config-file; give one per "
                     "variant or none")
    for option in ("iters", "batch", "size"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option} must be at least 1, got {value}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    return args


def variant_names(args):
    if args.name:
        return list(args.name)
    stems = [os.path.splitext(os.path.basename(path))[0] for path in args.config_file]
    # The same file name in two folders (ade20k/ and cityscapes/): keep the folder.
    return [stem if stems.count(stem) == 1 else os.path.splitext(path)[0]
            for stem, path in zip(stems, args.config_file)]


def is_semantic(cfg):
    return issubclass(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), SemanticSegmentor)


def num_classes(cfg):
    return cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES if is_semantic(cfg) else cfg.MODEL.ROI_HEADS.NUM_CLASSES


def default_size(cfg, inference):
    """The side the config's images have: test size, training crop, or largest training size."""
    if inference:
        return cfg.INPUT.MIN_SIZE_TEST
    crop = cfg.INPUT.CROP
    if crop.ENABLED and crop.TYPE == "absolute":
        return max(crop.SIZE)
    return min(max(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN)


class SyntheticStats:
    """Long-tailed class-statistics files of no dataset, one per class count, in a temp folder."""

    def __init__(self, folder):
        self.folder = folder
        self.paths = {}

    def path(self, cfg):
        task = "sem_seg" if is_semantic(cfg) else "instances"
        long_tail = cfg.MODEL.LONG_TAIL
        key = (num_classes(cfg), task, long_tail.HEAD_RATIO, long_tail.TAIL_RATIO)
        if key not in self.paths:
            stats = cs.synthetic_long_tail(key[0], task, head_ratio=key[2], tail_ratio=key[3])
            path = os.path.join(self.folder, f"synthetic_{task}_{key[0]}_{len(self.paths)}.json")
            cs.save(stats, path)
            self.paths[key] = path
        return self.paths[key]


def load_variant(config_file, opts, synthetic):
    """The variant's config, ready to build, and notes on what was substituted."""
    cfg = load_config(config_file, opts, freeze=False)
    notes = []
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        notes.append("config asks for CUDA, none here: runs on the CPU")
    if class_stats_needed(cfg) and not cfg.MODEL.LONG_TAIL.CLASS_STATS:
        cfg.MODEL.LONG_TAIL.CLASS_STATS = synthetic.path(cfg)
        # Said where the model reads them (counts or groups); the plain heads do not.
        if model_needs_class_stats(cfg):
            notes.append(f"class statistics: synthetic long-tailed profile of {num_classes(cfg)} "
                         "classes (no MODEL.LONG_TAIL.CLASS_STATS)")
    if stage2.is_stage2(cfg):
        notes.append("stage 2 frozen on random weights (stage-1 weights not needed here)")
    cfg.MODEL.WEIGHTS = ""
    cfg.freeze()
    return cfg, notes


def build_variant(cfg, inference, seed):
    """The model as tools/train_net.py builds it (stage 2 frozen), randomly initialised with
    ``seed``; its optimizer for training (else None); its parameter count before freezing (as
    the trainer logs it: frozen BatchNorm weights become buffers)."""
    torch.manual_seed(seed)
    model, total = build_model_and_count(cfg)
    model.train(not inference)
    optimizer = None if inference else build_optimizer(cfg, model)
    if optimizer is not None:
        # The update runs in full but moves nothing: every step of every variant sees the seed's
        # weights (a Mask R-CNN the same proposals), and random weights cannot diverge.
        for group in optimizer.param_groups:
            group["lr"] = 0.0
    return model, optimizer, total


def random_batch(cfg, size, batch, inference, generator):
    """Detectron2 model inputs of random square images, with random labels for training:
    semantic labels (5 % ignore) or instances (boxes, classes and box-shaped masks)."""
    classes = num_classes(cfg)
    inputs = []
    for _ in range(batch):
        image = torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
        item = {"image": image, "height": size, "width": size}
        if not inference and is_semantic(cfg):
            label = torch.randint(0, classes, (size, size), generator=generator)
            label[torch.rand(size, size, generator=generator) < IGNORE_SHARE] = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
            item["sem_seg"] = label
        elif not inference:
            item["instances"] = random_instances(size, classes, generator)
        inputs.append(item)
    return inputs


def random_instances(size, classes, generator):
    n = INSTANCES_PER_IMAGE
    sides = torch.randint(max(size // 16, 2), max(size // 2, 3), (n, 2), generator=generator)
    x0 = (torch.rand(n, generator=generator) * (size - sides[:, 0])).long()
    y0 = (torch.rand(n, generator=generator) * (size - sides[:, 1])).long()
    boxes = torch.stack([x0, y0, x0 + sides[:, 0], y0 + sides[:, 1]], dim=1)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i, (a, b, c, d) in enumerate(boxes.tolist()):
        masks[i, b:d, a:c] = True
    instances = Instances((size, size))
    instances.gt_boxes = Boxes(boxes.float())
    instances.gt_classes = torch.randint(0, classes, (n,), generator=generator)
    instances.gt_masks = BitMasks(masks)
    return instances


def cycling_step(batches, device, run):
    """One call = ``run(inputs)`` on the next batch (cycling); synchronises a GPU before returning."""
    state = {"i": 0}
    cuda = device.startswith("cuda")

    def step():
        run(batches[state["i"] % len(batches)])
        state["i"] += 1
        if cuda:
            torch.cuda.synchronize()

    return step


def make_step(model, optimizer, batches, device):
    """A training step (forward, backward, optimizer), or inference without gradient when there
    is no optimizer."""
    def run(inputs):
        if optimizer is None:
            with torch.no_grad():
                model(inputs)
        else:
            losses = model(inputs)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()

    return cycling_step(batches, device, run)


def make_backbone_forward(model, batches, device):
    """The backbone's forward without gradient, its images normalised and padded as the model's
    own forward does (``SemanticSegmentor`` and ``GeneralizedRCNN`` alike)."""
    @torch.no_grad()
    def run(inputs):
        images = [(x["image"].to(model.pixel_mean.device) - model.pixel_mean) / model.pixel_std
                  for x in inputs]
        model.backbone(ImageList.from_tensors(images, model.backbone.size_divisibility).tensor)

    return cycling_step(batches, device, run)


class PeakMemory:
    """Per variant, the largest peak over its steps: CUDA's max allocated bytes when the models
    run on a GPU, else the process's resident-set high-water mark, reset before each step where
    the kernel allows (else monotonic over the whole run)."""

    def __init__(self, cuda):
        self.cuda = cuda
        self.resettable = cuda or reset_peak_rss()
        self.peaks = {}

    def description(self):
        if self.cuda:
            return "peak MiB: CUDA max allocated during the variant's steps"
        if self.resettable:
            return ("peak MiB: process peak resident memory during the variant's steps (reset before each "
                    "step; includes every model built and the runtime, so compare differences)")
        return ("peak MiB: process peak resident memory (ru_maxrss / VmHWM cannot be reset here: monotonic "
                "over the process, so a variant's value includes the variants timed before it)")

    def before(self, name):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        elif self.resettable:
            reset_peak_rss()

    def after(self, name):
        peak = torch.cuda.max_memory_allocated() if self.cuda else peak_rss_bytes()
        self.peaks[name] = max(self.peaks.get(name, 0), peak)


def count_text(n):
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n:,}"


def main(argv=None):
    args = parse_args(argv)
    names = variant_names(args)
    if len(set(names)) != len(names):
        print("error: two variants have the same name; tell them apart with --name", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="benchmark_training_") as folder:
        try:
            synthetic = SyntheticStats(folder)
            loaded = [load_variant(path, args.opts, synthetic) for path in args.config_file]
        except LongTailSegError as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        devices = {cfg.MODEL.DEVICE for cfg, _ in loaded}
        if len(devices) > 1:
            print(f"error: the variants run on different devices {sorted(devices)}; set MODEL.DEVICE "
                  "for all of them (an override after the options)", file=sys.stderr)
            return 2
        device = devices.pop()
        batch = args.batch or (1 if args.inference else 2)
        steps, sizes, params, notes, flops = {}, {}, {}, {}, {}
        backbone_name = None
        batch_sets = {}
        for name, (cfg, variant_notes) in zip(tqdm(names, desc="building models"), loaded):
            try:
                model, optimizer, total_params = build_variant(cfg, args.inference, args.seed)
            except LongTailSegError as e:
                print(f"error: {name}: {one_line(e)}", file=sys.stderr)
                return 2
            size = args.size or default_size(cfg, args.inference)
            # Variants with the same task, classes and size share their batches.
            key = (is_semantic(cfg), num_classes(cfg), size, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
            if key not in batch_sets:
                generator = torch.Generator().manual_seed(args.seed)
                batch_sets[key] = [random_batch(cfg, size, batch, args.inference, generator)
                                   for _ in range(args.iters)]
            steps[name] = make_step(model, optimizer, batch_sets[key], device)
            sizes[name] = size
            params[name] = (total_params, sum(p.numel() for p in model.parameters() if p.requires_grad))
            if not args.no_flops:
                image = batch_sets[key][0][0]["image"].to(device)
                with EventStorage(0):
                    flops[name] = count_inference_flops(model, image)
            notes[name] = variant_notes
            if args.backbone_forward and name == names[0]:
                backbone_name = f"{name} backbone forward"
                backbone = (make_backbone_forward(model, batch_sets[key], device), size,
                            (sum(p.numel() for p in model.backbone.parameters()), 0))
        if backbone_name:  # timed last in each round, after the variants
            steps[backbone_name], sizes[backbone_name], params[backbone_name] = backbone

        memory = PeakMemory(device.startswith("cuda"))
        total = len(steps) * (args.warmup + args.iters)
        # Models log training statistics (Mask R-CNN's accuracies) as they do in the trainer.
        with EventStorage(0), tqdm(total=total, desc="timing (round-robin)") as bar:
            times = round_robin_times(steps, args.iters, args.warmup, before_step=memory.before,
                                      after_step=memory.after, progress=bar.update)

    rows, results = [], []
    reference = statistics.median(times[names[0]])
    for name in names + ([backbone_name] if backbone_name else []):
        median = statistics.median(times[name])
        peak_mb = memory.peaks[name] / 2**20
        total_params, trainable = params[name]
        results.append({"name": name, "median_s": median, "ratio": median / reference,
                        "peak_mem_mb": peak_mb, "size": sizes[name], "batch": batch,
                        "params": total_params, "trainable_params": trainable,
                        "inference_flops": flops.get(name)})
        rows.append([name, f"{median:.3f}", f"{median / reference:.2f}", f"{peak_mb:.0f}",
                     count_text(total_params), "-" if name == backbone_name else count_text(trainable),
                     f"{flops[name] / 1e9:.2f}" if name in flops else "-"])
    what = ("inference (eval mode, no gradient)" if args.inference
            else "training step (forward + backward + optimizer)")
    shown_sizes = sorted(set(sizes.values()))
    print(f"{what}, batch {batch} of {'/'.join(f'{s}x{s}' for s in shown_sizes)} random images, "
          f"device {device}, {torch.get_num_threads()} thread(s), median of {args.iters} steps after "
          f"{args.warmup} warm-up, variants round-robin on the same batches; random weights")
    common = [note for note in notes[names[0]] if all(note in notes[name] for name in names)]
    for note in common:
        print(f"  every variant: {note}")
    for name in names:
        for note in notes[name]:
            if note not in common:
                print(f"  {name}: {note}")
    if backbone_name:
        print(f"  {backbone_name}: {names[0]}'s backbone alone, forward without gradient (parameters: the "
              "backbone's)")
    print(memory.description())
    print(tabulate(rows, headers=["variant", "s/step", f"vs {names[0]}", "peak MiB", "parameters",
                                  "trainable", "GFLOPs (1 image)"], tablefmt="pipe", disable_numparse=True))
    if args.json:
        write_json_atomically(results, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
