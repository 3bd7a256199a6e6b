"""SOLVER.OPTIMIZER and SOLVER.HEAD_LR_MULTIPLIER: Detectron2's SGD unchanged by default, AdamW with
SegFormer's parameter groups, the schedule keeping the head's factor, bad values refused."""
import pytest
import torch

from conftest import random_batch, tiny_cfg

from detectron2.modeling import build_model
from detectron2.solver import build_optimizer as build_detectron2_optimizer

from longtailseg.engine import Trainer
from longtailseg.engine.config_checks import check_run_config
from longtailseg.engine.optimizer import build_optimizer
from longtailseg.errors import ConfigError

NORM_TYPES = (torch.nn.LayerNorm, torch.nn.BatchNorm2d, torch.nn.GroupNorm)


def groups_by_parameter(optimizer):
    return {id(p): {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups for p in g["params"]}


def test_default_is_detectron2s_sgd(datasets_root, tmp_path):
    """Configs without the keys get exactly the optimizer they had: same class, groups, values."""
    cfg = tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path)
    model = build_model(cfg)
    ours, theirs = Trainer.build_optimizer(cfg, model), build_detectron2_optimizer(cfg, model)
    assert type(ours) is type(theirs) and isinstance(ours, torch.optim.SGD)
    assert groups_by_parameter(ours) == groups_by_parameter(theirs)
    assert [[id(p) for p in g["params"]] for g in ours.param_groups] == \
           [[id(p) for p in g["params"]] for g in theirs.param_groups]


def test_adamw_groups_follow_segformers_recipe(datasets_root, tmp_path):
    cfg = tiny_cfg("synthetic/segformer.yaml", tmp_path)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = groups_by_parameter(optimizer)
    backbone = {id(p) for p in model.backbone.parameters()}
    norms = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    assert len(groups) == sum(1 for _ in model.parameters())
    for pid, group in groups.items():
        assert group["lr"] == pytest.approx(6e-4 if pid in backbone else 6e-3)
        assert group["weight_decay"] == (0.0 if pid in norms else 0.01)
        assert group["betas"] == (0.9, 0.999)
    assert norms & backbone and norms - backbone  # LayerNorms of MiT, BatchNorm of the head


def test_the_schedule_keeps_the_heads_factor_and_adamw_learns(datasets_root, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg("synthetic/segformer.yaml", tmp_path, "SOLVER.WARMUP_ITERS", 3, "SOLVER.MAX_ITER", 8)
    model = build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    backbone = {id(p) for p in model.backbone.parameters()}
    batch = random_batch(seed=4)
    model.train()
    for module in model.modules():  # a deterministic forward: no dropout, no drop-path
        if isinstance(module, torch.nn.Dropout2d) or "DropPath" in type(module).__name__:
            module.eval()
    losses = []
    for _ in range(8):
        loss = model(batch)["loss_sem_seg"]
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        rates = {("backbone" if id(g["params"][0]) in backbone else "head"): g["lr"] for g in optimizer.param_groups}
        assert rates["head"] == pytest.approx(10 * rates["backbone"])
    assert losses[-1] < losses[0]


def test_sgd_with_a_head_multiplier(datasets_root, tmp_path):
    cfg = tiny_cfg("synthetic/fcn.yaml", tmp_path, "SOLVER.HEAD_LR_MULTIPLIER", 2.0)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer) is torch.optim.SGD
    backbone = {id(p) for p in model.backbone.parameters()}
    for pid, group in groups_by_parameter(optimizer).items():
        assert group["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * (1 if pid in backbone else 2))
        assert group["momentum"] == 0.9


@pytest.mark.parametrize("key, value, message", [
    ("SOLVER.OPTIMIZER", "Adam", "SOLVER.OPTIMIZER is 'Adam'; use one of SGD, ADAMW"),
    ("SOLVER.HEAD_LR_MULTIPLIER", 0.0, "SOLVER.HEAD_LR_MULTIPLIER is 0.0; give a positive factor"),
])
def test_bad_values_are_refused_before_training(key, value, message, datasets_root, tmp_path):
    cfg = tiny_cfg("synthetic/segformer.yaml", tmp_path, key, value)
    with pytest.raises(ConfigError, match=message):
        check_run_config(cfg, world_size=1)
    check_run_config(cfg, world_size=1, eval_only=True)  # an evaluation builds no optimizer
