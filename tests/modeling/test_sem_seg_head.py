"""LongTailDeepLabV3PlusHead with BLV, GRW and DisAlign, on a tiny model built from the config."""
import logging

import pytest
import torch

from conftest import random_batch, tiny_cfg
from longtailseg.engine.stage2 import prepare_stage2_model
from longtailseg.longtail.calibration import generalized_reweighting

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model


def _cfg(output_dir, *opts):
    return tiny_cfg("synthetic/deeplab_v3_plus.yaml", output_dir, *opts)


def test_any_size_inference_with_global_aspp_pooling(datasets_root, tmp_path):
    model = build_model(_cfg(tmp_path, "INPUT.CROP.ENABLED", "True", "INPUT.CROP.SIZE", "(32, 32)")).eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}])
    assert out[0]["sem_seg"].shape == (19, 40, 56)


def test_grw_weights_and_blv_come_from_the_class_statistics(datasets_root, tmp_path):
    cfg = _cfg(tmp_path, "MODEL.LONG_TAIL.GRW.ENABLED", "True", "MODEL.LONG_TAIL.GRW.RHO", "0.5",
               "MODEL.LONG_TAIL.BLV.ENABLED", "True")
    head = build_model(cfg).sem_seg_head
    from longtailseg.longtail import class_stats as cs

    counts = cs.load(str(tmp_path / "class_stats.json")).counts
    assert torch.allclose(head.long_tail.class_weights, generalized_reweighting(counts, 0.5))
    assert head.long_tail.variation is not None and head.long_tail.variation.sigma == 4.0
    # BLV changes the training loss but the inference logits are those of the plain head
    model = build_model(cfg)
    torch.manual_seed(0)
    plain = build_model(_cfg(tmp_path))
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    batch = random_batch()
    with torch.no_grad():
        assert torch.equal(model(batch)[0]["sem_seg"], plain(batch)[0]["sem_seg"])


def test_disalign_stage2_identity_then_only_calibration_moves(datasets_root, tmp_path):
    torch.manual_seed(0)
    stage1 = build_model(_cfg(tmp_path))
    stage1.train()
    optimizer = torch.optim.SGD(stage1.parameters(), lr=0.1)
    for seed in range(2):  # move BN statistics and weights away from their init
        loss = sum(stage1(random_batch(seed=seed)).values())
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    DetectionCheckpointer(stage1, save_dir=str(tmp_path)).save("stage1")

    cfg = _cfg(tmp_path, "MODEL.LONG_TAIL.DISALIGN.ENABLED", "True")
    model = prepare_stage2_model(build_model(cfg))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("fvcore.common.checkpoint").addHandler(handler)
    try:
        DetectionCheckpointer(model).load(str(tmp_path / "stage1.pth"))
    finally:
        logging.getLogger("fvcore.common.checkpoint").removeHandler(handler)
    log = "\n".join(r.getMessage() for r in records)
    assert "calibration" in log and "not found in the checkpoint" in log
    assert "num_batches_tracked" not in log and "not used by the model" not in log

    batch = random_batch(seed=5)
    stage1.eval(), model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch)[0]["sem_seg"], stage1(batch)[0]["sem_seg"])  # identity

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "sem_seg_head.long_tail.calibration.alpha", "sem_seg_head.long_tail.calibration.beta",
        "sem_seg_head.long_tail.calibration.confidence.weight",
        "sem_seg_head.long_tail.calibration.confidence.bias"}
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    for seed in range(2):
        loss = sum(model(random_batch(seed=10 + seed)).values())
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".calibration." in k for k in changed), changed
    assert any("running_mean" in k for k in before)  # BN statistics exist and did not move


def test_pat_loss_trains_one_step(datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg(tmp_path, "MODEL.LONG_TAIL.LOSS.NAME", "PAT"))
    head = model.sem_seg_head
    assert type(head.long_tail.loss_fn).__name__ == "PATLoss" and head.long_tail.loss_fn in head.modules()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    loss = sum(model(random_batch()).values())
    assert torch.isfinite(loss) and loss.item() > 0
    optimizer.zero_grad(), loss.backward(), optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unknown_loss_name_is_a_config_error(datasets_root, tmp_path):
    from longtailseg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"MODEL\.LONG_TAIL\.LOSS\.NAME.*Seesaw"):
        build_model(_cfg(tmp_path, "MODEL.LONG_TAIL.LOSS.NAME", "Nope"))


def test_ldam_drw_start_from_config_and_the_trainer_hook_sets_the_iteration(datasets_root, tmp_path):
    from types import SimpleNamespace

    from detectron2.modeling import build_model

    from longtailseg.engine.hooks import LossIterationHook

    model = build_model(tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path, "MODEL.LONG_TAIL.LOSS.NAME",
                                 "LDAM", "MODEL.LONG_TAIL.LOSS.LDAM_DRW_START", "2"))
    loss = model.sem_seg_head.long_tail.loss_fn
    assert loss.drw_start == 2 and loss.iteration == 0
    hook = LossIterationHook()
    hook.trainer = SimpleNamespace(model=model, iter=7)  # what Detectron2's trainer exposes
    hook.before_train()  # as Detectron2's trainer calls it, before the first step
    hook.before_step()
    assert loss.iteration == 7


def test_a_loss_registered_by_the_user_is_chosen_by_its_config_name(datasets_root, tmp_path):
    from longtailseg.longtail.losses import LOSS_REGISTRY, CrossEntropyLoss

    @LOSS_REGISTRY.register("HalfCE")
    class HalfCrossEntropy(CrossEntropyLoss):
        @classmethod
        def options_from_config(cls, loss_cfg):
            return dict(scale=loss_cfg.FOCAL_GAMMA)  # any existing key reaches the loss

        def __init__(self, class_counts=None, ignore_index=255, scale=1.0):
            super().__init__(class_counts, ignore_index)
            self.scale = scale

        def forward(self, logits, targets, class_weights=None):
            return super().forward(logits, targets, class_weights) / self.scale

    try:
        torch.manual_seed(0)
        plain = build_model(_cfg(tmp_path))
        custom = build_model(_cfg(tmp_path, "MODEL.LONG_TAIL.LOSS.NAME", "HalfCE",
                                  "MODEL.LONG_TAIL.LOSS.FOCAL_GAMMA", "2.0"))
        custom.load_state_dict(plain.state_dict())
        assert isinstance(custom.sem_seg_head.long_tail.loss_fn, HalfCrossEntropy)
        batch = random_batch()
        assert custom(batch)["loss_sem_seg"].item() == pytest.approx(plain(batch)["loss_sem_seg"].item() / 2)
    finally:
        LOSS_REGISTRY._obj_map.pop("HalfCE")


def test_pat_default_constant_trains_at_150_classes(datasets_root, tmp_path):
    """With every PAT key at its default, 150 classes (ADE20K's count): beta <= e^3 / 2, so the
    loss is about beta * log(150) / 150 at initialisation, not the ~1e12 of K = C = 150."""
    torch.manual_seed(0)
    cfg = _cfg(tmp_path, "MODEL.LONG_TAIL.LOSS.NAME", "PAT", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "150")
    assert cfg.MODEL.LONG_TAIL.LOSS.PAT_CONSTANT == 3.0
    model = build_model(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for seed in range(2):
        losses = model(random_batch(seed=seed, num_classes=150))
        loss = losses["loss_sem_seg"]
        assert torch.isfinite(loss) and 0.01 < loss.item() < 1.0, loss.item()
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("constant, num_classes", [("0.0", "150"), ("40.0", "19")])
def test_saturating_pat_constant_is_refused_naming_the_key(datasets_root, tmp_path, constant, num_classes):
    from longtailseg.errors import ConfigError

    cfg = _cfg(tmp_path, "MODEL.LONG_TAIL.LOSS.NAME", "PAT", "MODEL.LONG_TAIL.LOSS.PAT_CONSTANT", constant,
               "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes)
    with pytest.raises(ConfigError, match=r"MODEL\.LONG_TAIL\.LOSS\.PAT_CONSTANT K = (150|40).*exceeds "
                                          r"PAT_MAX_EXPONENT = 30.*at most 30") as excinfo:
        build_model(cfg)
    assert "\n" not in str(excinfo.value)
