"""EXTENDING.md's recipes, run as the guide writes them.

The ``python`` blocks of each recipe's section are executed, in order, as one module (kept at
their line numbers in EXTENDING.md, so a traceback points into the guide); each test then checks
what the recipe claims. Registries are global to the process: each recipe runs once, and its
names (RampedLA, SeparableConvHead, ...) are used by no other test.
"""
import functools
import os
import re
import sys
import types

import pytest
import torch
import yaml

from conftest import REPO, TINY_TRAINING, instance_batch, random_batch, tiny_cfg

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import build_model as build_detectron2_model
from detectron2.utils.events import EventStorage

from longtailseg.engine import Trainer, build_model, load_config, stage2
from longtailseg.errors import ConfigError
from longtailseg.longtail import class_stats as cs
from longtailseg.longtail.losses import build_loss

GUIDE = os.path.join(REPO, "EXTENDING.md")
RECIPES = {
    "loss": "1. A loss",
    "head": "2. A decode head",
    "backbone": "3. A backbone",
    "dataset": "4. A dataset",
    "two_stage": "5. A two-stage method",
}
FENCE = re.compile(r"^```(\w*)\s*$")


def guide_blocks(language):
    """{section title: [(first line index, [lines])]} of the guide's fenced blocks in ``language``."""
    with open(GUIDE, encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks, section, start = {}, None, None
    for i, line in enumerate(lines):
        fence = FENCE.match(line)
        if start is None and line.startswith("## "):
            section = line[3:].strip()
        elif start is None and fence and fence.group(1):
            start, kind = i + 1, fence.group(1)
        elif start is not None and fence and not fence.group(1):
            if kind == language:
                blocks.setdefault(section, []).append((start, lines[start:i]))
            start = None
    return blocks


@functools.lru_cache(maxsize=None)
def recipe(key):
    """The module a recipe's python blocks make, run once per process."""
    blocks = guide_blocks("python")[RECIPES[key]]
    source = []
    for start, lines in blocks:
        source += [""] * (start - len(source)) + lines
    module = types.ModuleType(f"extending_{key}")
    module.__file__ = GUIDE
    sys.modules[module.__name__] = module  # what Detectron2's configurable and pickling expect
    exec(compile("\n".join(source), GUIDE, "exec"), module.__dict__)
    return module


def config_with(add_config, config, output_dir, *opts):
    """A config of configs/``config`` shrunk by TINY_TRAINING, the recipe's keys added first."""
    return load_config(os.path.join(REPO, "configs", config),
                       TINY_TRAINING + ["OUTPUT_DIR", str(output_dir)] + [str(o) for o in opts],
                       freeze=False, add_config=[add_config])


def sgd_losses(model, batch, steps, lr):
    """The summed loss before each of ``steps`` SGD steps on one fixed batch."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    values = []
    with EventStorage(0):
        for _ in range(steps):
            loss = sum(model(batch).values())
            optimizer.zero_grad(), loss.backward(), optimizer.step()
            values.append(loss.item())
    return values


def finite(values):
    return bool(torch.isfinite(torch.tensor(values)).all())


def train_with_trainer(cfg):
    """Trainer's run of ``cfg``: (the trainer, each iteration's total loss)."""
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer, trainer.storage.history("total_loss").values()


def test_every_recipe_and_only_the_recipes_have_tested_code():
    assert set(guide_blocks("python")) == set(RECIPES.values())


# ---- 1. a loss ------------------------------------------------------------------------------

def test_loss_ramps_from_cross_entropy_to_logit_adjustment():
    loss = recipe("loss")
    assert torch.isfinite(loss.pixel_loss) and torch.isfinite(loss.box_loss)
    assert loss.boxes.loss_fn.log_prior.shape == (4,)  # K + 1 columns: a background count
    counts = [9000, 900, 90]
    ramped = build_loss("RampedLA", class_counts=counts, tau=1.0, ramp_iters=10)
    assert type(ramped) is loss.RampedLogitAdjustedLoss
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    targets[:, 0] = 255
    for iteration, reference in ((0, build_loss("CE")),
                                 (5, build_loss("LA", class_counts=counts, tau=0.5)),
                                 (10, build_loss("LA", class_counts=counts, tau=1.0))):
        ramped.set_iteration(iteration)
        assert torch.allclose(ramped(logits, targets), reference(logits, targets))
    with pytest.raises(ValueError, match="needs the class counts"):
        build_loss("RampedLA")


def test_loss_selected_by_name_trains_through_the_trainer(datasets_root, tmp_path):
    loss = recipe("loss")
    cfg = loss.load_config_with_ramped_la(
        os.path.join(REPO, "configs", "synthetic", "fcn.yaml"),
        TINY_TRAINING + ["OUTPUT_DIR", str(tmp_path), "MODEL.LONG_TAIL.LOSS.NAME", "RampedLA",
                         "MODEL.LONG_TAIL.LOSS.RAMPED_LA_TAU", "0.5",
                         "MODEL.LONG_TAIL.LOSS.RAMPED_LA_ITERS", "2",
                         "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()"])
    torch.manual_seed(0)
    trainer, losses = train_with_trainer(cfg)
    loss_fn = trainer.model.sem_seg_head.long_tail.loss_fn
    assert type(loss_fn) is loss.RampedLogitAdjustedLoss
    assert (loss_fn.tau, loss_fn.ramp_iters) == (0.5, 2)
    assert loss_fn.iteration == 2  # the Trainer told it the iteration before each step
    counts = torch.tensor(cs.load(str(tmp_path / "class_stats.json")).counts, dtype=torch.float64)
    assert torch.allclose(loss_fn.log_prior, (counts / counts.sum()).log().float())
    assert len(losses) == 3 and finite(losses)
    values = sgd_losses(trainer.model, random_batch(seed=1), steps=3, lr=0.01)
    assert finite(values) and values[-1] < values[0], values


def test_loss_trains_the_box_classifier(datasets_root, tmp_path):
    loss = recipe("loss")
    cfg = loss.load_config_with_ramped_la(
        os.path.join(REPO, "configs", "synthetic", "mask_rcnn_baseline.yaml"),
        TINY_TRAINING + ["OUTPUT_DIR", str(tmp_path), "MODEL.LONG_TAIL.LOSS.NAME", "RampedLA"])
    torch.manual_seed(0)
    model = build_model(cfg)
    loss_fn = model.roi_heads.box_predictor.long_tail.loss_fn
    assert type(loss_fn) is loss.RampedLogitAdjustedLoss
    assert float(loss_fn.log_prior.exp()[-1]) == pytest.approx(0.75)  # 1 - POSITIVE_FRACTION
    model.train()
    with EventStorage(0):
        losses = model(instance_batch())
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0


# ---- 2. a decode head -----------------------------------------------------------------------

def test_head_trains_with_the_long_tail_methods(datasets_root, tmp_path):
    head = recipe("head")
    opts = ["MODEL.SEM_SEG_HEAD.NAME", "SeparableConvHead", "MODEL.LONG_TAIL.BLV.ENABLED", "True",
            "MODEL.LONG_TAIL.GRW.ENABLED", "True", "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()"]
    cfg = tiny_cfg("synthetic/fcn.yaml", tmp_path, *opts)
    model = build_detectron2_model(cfg)
    assert type(model.sem_seg_head) is head.SeparableConvHead
    long_tail = model.sem_seg_head.long_tail
    assert long_tail.variation is not None and long_tail.class_weights is not None
    torch.manual_seed(0)
    trainer, losses = train_with_trainer(cfg)
    assert len(losses) == 3 and finite(losses)
    model = trainer.model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}])
    assert out[0]["sem_seg"].shape == (19, 40, 56)
    # DisAlign makes it a second stage, as for the package's heads.
    disalign = tiny_cfg("synthetic/fcn.yaml", tmp_path / "disalign", *opts,
                        "MODEL.LONG_TAIL.DISALIGN.ENABLED", "True")
    assert stage2.second_stage(disalign).name == "DisAlign calibration"


def test_head_serves_as_a_medoe_expert(datasets_root, tmp_path):
    head = recipe("head")
    cfg = tiny_cfg("synthetic/medoe_deeplab.yaml", tmp_path, "MODEL.MEDOE.EXPERT_HEAD", "SeparableConvHead")
    torch.manual_seed(0)
    model = build_detectron2_model(cfg)
    experts = model.sem_seg_head.experts
    assert [type(e) for e in experts] == [head.SeparableConvHead] * 3
    assert [e.predictor.in_channels for e in experts] == [64, 16, 16]  # narrow_config: EXPERT_CHANNELS
    model.train()
    with EventStorage(0):
        losses = model(random_batch())
    assert {f"loss_sem_seg_expert{k}" for k in (1, 2, 3)} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(e.predictor.weight.grad.abs().sum() > 0 for e in experts)
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 32, 32) * 255, "height": 32, "width": 32}])
    assert out[0]["sem_seg"].shape == (19, 32, 32)


# ---- 3. a backbone --------------------------------------------------------------------------

def test_backbone_feeds_deeplab_v3_plus(datasets_root, tmp_path):
    backbone = recipe("backbone")
    (_, lines), = guide_blocks("yaml")[RECIPES["backbone"]]
    cfg = config_with(backbone.add_two_scale_backbone_config, "synthetic/deeplab_v3_plus.yaml", tmp_path)
    cfg.merge_from_other_cfg(CfgNode(yaml.safe_load("\n".join(lines))))  # the guide's YAML
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model.backbone) is backbone.TwoScaleBackbone and model.backbone.size_divisibility == 8
    assert {k: (s.channels, s.stride) for k, s in model.backbone.output_shape().items()} == {
        "stride4": (32, 4), "stride8": (64, 8)}
    values = sgd_losses(model, random_batch(), steps=2, lr=0.01)
    assert finite(values)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():  # padded to a multiple of 8, predicted at the image's size
        out = model([{"image": torch.rand(3, 36, 52) * 255, "height": 36, "width": 52}])
    assert out[0]["sem_seg"].shape == (19, 36, 52)


# ---- 4. a dataset ---------------------------------------------------------------------------

def test_dataset_registers_trains_and_evaluates_by_class_group(tmp_path):
    dataset = recipe("dataset")
    root = str(tmp_path / "toy_street")
    dataset.write_toy_street(root)
    dataset.register_toy_street(root)
    torch.manual_seed(0)
    results = dataset.train_on_toy_street(os.path.join(REPO, "configs", "synthetic", "fcn.yaml"),
                                          str(tmp_path / "output"), TINY_TRAINING + ["SOLVER.MAX_ITER", "2"])
    stats = cs.load(str(tmp_path / "output" / "class_stats.json"))
    assert stats.dataset == "toy_street_train" and stats.class_names == dataset.TOY_STREET_CLASSES
    assert stats.groups == {"head": [0, 1], "body": [2], "tail": [3]}, stats.groups
    metrics = results["sem_seg"]
    for group in ("head", "body", "tail"):
        assert 0 <= metrics[f"mACC-{group}"] <= 100 and f"mIoU-{group}" in metrics


# ---- 5. a two-stage method ------------------------------------------------------------------

def test_two_stage_method_trains_only_its_declared_module(datasets_root, tmp_path):
    two_stage = recipe("two_stage")

    def cfg(output_dir, enabled, weights=""):
        return config_with(two_stage.add_class_bias_config, "synthetic/fcn.yaml", output_dir,
                           "MODEL.SEM_SEG_HEAD.NAME", "ClassBiasFCNHead", "MODEL.CLASS_BIAS.ENABLED", enabled,
                           "MODEL.CLASS_BIAS.STAGE1_CONFIG", "configs/my_stage1.yaml",
                           "MODEL.WEIGHTS", weights, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()")

    stage1_cfg = cfg(tmp_path / "stage1", False)
    assert not stage2.is_stage2(stage1_cfg)
    torch.manual_seed(0)
    stage1 = build_model(stage1_cfg)
    assert stage1.sem_seg_head.class_bias is None
    sgd_losses(stage1, random_batch(), steps=1, lr=0.01)
    DetectionCheckpointer(stage1, save_dir=str(tmp_path / "stage1")).save("model_final")
    weights = str(tmp_path / "stage1" / "model_final.pth")

    stage2_cfg = cfg(tmp_path / "stage2", True, weights)
    assert stage2.is_stage2(stage2_cfg)
    assert stage2.second_stage(stage2_cfg).name == "per-class logit bias"
    model = two_stage.build_stage2_model(stage2_cfg)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["sem_seg_head.class_bias.bias"]
    loaded = model.state_dict()
    for key, value in stage1.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, loaded[key]), key

    # The Trainer runs stage 2 the same way: only the bias moves.
    torch.manual_seed(0)
    trainer, losses = train_with_trainer(stage2_cfg)
    trained = trainer.model.state_dict()
    assert not torch.equal(trained["sem_seg_head.class_bias.bias"], torch.zeros(19))
    assert all(torch.equal(v, trained[k]) for k, v in loaded.items() if k != "sem_seg_head.class_bias.bias")
    # Its model_final.pth is a complete stage-2 model: evaluation loads it with nothing missing.
    evaluated = build_model(cfg(tmp_path / "eval", True, tmp_path / "stage2" / "model_final.pth"))
    assert torch.equal(evaluated.sem_seg_head.class_bias.bias, trained["sem_seg_head.class_bias.bias"])

    # Without stage-1 weights it stops with one line naming the declared stage-1 config.
    with pytest.raises(ConfigError, match="configs/my_stage1.yaml"):
        stage2.check_stage1_weights(cfg(tmp_path / "none", True), resuming=False)
