"""LongTailStandardROIHeads and its box predictor: cosine classifier, DisAlign on the foreground
logits, BLV, GRW, the loss registry, checkpoint compatibility with Detectron2's Mask R-CNN and
DisAlign stage 2, on a tiny Mask R-CNN built from the synthetic config."""

import pytest
import torch

from conftest import instance_batch, tiny_cfg
from longtailseg.engine.checkpoint import LongTailCheckpointer
from longtailseg.engine.stage2 import prepare_stage2_model
from longtailseg.errors import ClassStatsError, ConfigError
from longtailseg.longtail import class_stats as cs
from longtailseg.longtail.calibration import generalized_reweighting
from longtailseg.longtail.cosine import CosineClassifier
from longtailseg.modeling.long_tail_classifier import LongTailClassifier
from longtailseg.modeling.roi_heads import LongTailFastRCNNOutputLayers

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.utils.events import EventStorage

K = 19
CALIBRATION_KEYS = {f"roi_heads.box_predictor.long_tail.calibration.{k}"
                    for k in ("alpha", "beta", "confidence.weight", "confidence.bias")}
DISALIGN = ["MODEL.LONG_TAIL.DISALIGN.ENABLED", "True"]
COSINE = ["MODEL.ROI_BOX_HEAD.COSINE.ENABLED", "True"]


def _cfg(output_dir, *opts):
    return tiny_cfg("synthetic/mask_rcnn_baseline.yaml", output_dir, *opts)


def _predictor(num_classes=4, channels=16, cosine_scale=None, **long_tail_options):
    """The box predictor built without a config; ``long_tail_options`` go to its
    LongTailClassifier (boxes: background column, no ignored label)."""
    torch.manual_seed(0)
    long_tail = LongTailClassifier(num_classes, channels, spatial=False, background_column=True,
                                   ignore_value=-1, **long_tail_options)
    return LongTailFastRCNNOutputLayers(
        ShapeSpec(channels=channels), box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        num_classes=num_classes, cosine_scale=cosine_scale, long_tail=long_tail)


def _train(model, steps, lr=1e-3, seed=0):
    """``steps`` SGD steps on the trainable parameters, on random batches."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    with EventStorage(0):
        for step in range(steps):
            loss = sum(model(instance_batch(seed=seed + step)).values())
            optimizer.zero_grad(), loss.backward(), optimizer.step()
    return model


def _stage1(model):
    """A stand-in for a trained stage 1: weights moved by an SGD step, BatchNorm statistics moved
    a little (a few real steps from scratch on 32 px images leave them unusable for evaluation:
    res5 is 1x1 there)."""
    _train(model, 1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in norms:
            m.running_mean.add_(0.01 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.mul_(1.0 + 0.1 * torch.rand(m.running_var.shape, generator=g))
    return model


def _incompatible_keys(model, path):
    """Missing / unexpected keys of loading ``path`` into ``model`` as training would."""
    checkpointer = LongTailCheckpointer(model)
    checkpointer.load(str(path))
    return checkpointer.last_incompatible


# ---- the box predictor on its own ----------------------------------------------------------

def test_foreground_only_calibration_leaves_the_background_logit_unchanged():
    predictor = _predictor(disalign=True)
    with torch.no_grad():
        predictor.long_tail.calibration.alpha.fill_(3.0)
        predictor.long_tail.calibration.beta.fill_(-2.0)
        predictor.long_tail.calibration.confidence.bias.fill_(5.0)  # sigma(x) close to 1
    x = torch.randn(10, 16)
    raw = predictor.cls_score(x)
    scores, deltas = predictor(x)
    assert scores.shape == (10, 5) and deltas.shape == (10, 16)
    assert torch.equal(scores[:, 4], raw[:, 4])  # background passes through, bit for bit
    assert not torch.allclose(scores[:, :4], raw[:, :4], atol=0.5)


@pytest.mark.parametrize("cosine", [False, True])
def test_disalign_is_the_identity_at_initialisation(cosine):
    predictor = _predictor(disalign=True, cosine_scale=20.0 if cosine else None)
    x = torch.randn(10, 16)
    assert torch.equal(predictor(x)[0], predictor.cls_score(x))


def test_cosine_logits_are_bounded_by_the_scale_over_all_outputs():
    predictor = _predictor(cosine_scale=20.0)
    assert isinstance(predictor.cls_score, CosineClassifier)
    assert predictor.cls_score.weight.shape == (5, 16)  # K + 1 rows: background included
    scores, _ = predictor(torch.randn(50, 16) * 100)
    assert scores.abs().max() <= 20.0 + 1e-4
    assert {n for n, _ in predictor.named_parameters()} == {
        "cls_score.weight", "cls_score.scale", "bbox_pred.weight", "bbox_pred.bias"}


def test_grw_weights_the_foreground_to_sum_k_and_background_one():
    counts = [400, 100, 20, 5]
    predictor = _predictor(class_counts=counts, grw_rho=0.8)
    weights = predictor.long_tail.class_weights
    assert weights.shape == (5,) and float(weights[4]) == 1.0
    assert torch.allclose(weights[:4], generalized_reweighting(counts, 0.8))
    assert float(weights[:4].sum()) == pytest.approx(4.0)
    assert "class_weights" not in predictor.state_dict()


class _Recorder(torch.nn.Module):
    def forward(self, logits, targets, class_weights=None):
        self.logits = logits.detach().clone()
        return logits.sum() * 0


def test_blv_varies_only_the_foreground_logits_and_only_in_training():
    predictor = _predictor(class_counts=[400, 100, 20, 5], blv_sigma=4.0, loss=_Recorder())
    scores = torch.randn(200, 5)
    targets = torch.randint(0, 5, (200,))
    predictor.train()
    predictor.long_tail.loss(scores, targets)
    shift = predictor.long_tail.loss_fn.logits - scores
    assert torch.equal(shift[:, 4], torch.zeros(200))  # background: no variation
    assert (shift[:, :4] >= 0).all() and shift[:, 3].mean() > shift[:, 1].mean() > 0
    scale = torch.tensor([525.0 / n for n in (400, 100, 20, 5)]).log()
    assert torch.all(shift[:, :4].max(0).values <= scale / scale.max() + 1e-6)  # |eps| <= 1
    predictor.eval()
    predictor.long_tail.loss(scores, targets)
    assert torch.equal(predictor.long_tail.loss_fn.logits, scores)


# ---- built from the config: class statistics and losses ------------------------------------

def test_blv_and_grw_read_the_instance_counts_and_train_a_step(datasets_root, tmp_path):
    cfg = _cfg(tmp_path, "MODEL.LONG_TAIL.BLV.ENABLED", "True", "MODEL.LONG_TAIL.GRW.ENABLED", "True")
    model = build_model(cfg)
    predictor = model.roi_heads.box_predictor
    stats = cs.load(str(tmp_path / "class_stats.json"))  # computed on first use and cached
    assert stats.task == "instances" and stats.dataset == "synthetic_lvis_train"
    assert torch.allclose(predictor.long_tail.class_weights[:K], generalized_reweighting(stats.counts, 0.8))
    assert predictor.long_tail.variation is not None and predictor.long_tail.variation.scale.numel() == K
    _train(model, 1)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_count_based_losses_get_a_background_count(datasets_root, tmp_path):
    predictor = build_model(_cfg(tmp_path, "MODEL.LONG_TAIL.LOSS.NAME", "BMS")).roi_heads.box_predictor
    prior = predictor.long_tail.loss_fn.log_prior.exp()
    assert prior.shape == (K + 1,)
    assert float(prior[K]) == pytest.approx(0.75)  # 1 - ROI_HEADS.POSITIVE_FRACTION


@pytest.mark.parametrize("name", ["CB", "Seesaw"])
def test_losses_that_would_suppress_background_are_refused(name, datasets_root, tmp_path):
    with pytest.raises(ConfigError, match=f"LOSS.NAME: {name} is not used"):
        build_model(_cfg(tmp_path, "MODEL.LONG_TAIL.LOSS.NAME", name))


def test_class_stats_with_another_category_count_is_a_class_stats_error(datasets_root, tmp_path):
    path = tmp_path / "stats.json"
    stats = cs.ClassStats(dataset="synthetic_lvis_train", task="instances",
                          class_names=[f"c{i}" for i in range(K - 1)], counts=[1] * (K - 1),
                          image_counts=[1] * (K - 1), groups={"head": [], "body": [], "tail": []},
                          group_rule="", num_images=1)
    cs.save(stats, str(path))
    with pytest.raises(ClassStatsError, match=f"{path}.*18 classes.*compute_class_stats.py"):
        build_model(_cfg(tmp_path, "MODEL.LONG_TAIL.BLV.ENABLED", "True",
                         "MODEL.LONG_TAIL.CLASS_STATS", path))


# ---- checkpoints and DisAlign stage 2 ------------------------------------------------------

@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    """A Detectron2 Mask R-CNN with Detectron2's own StandardROIHeads (weights and BatchNorm
    statistics moved), saved by DetectionCheckpointer."""
    folder = tmp_path_factory.mktemp("plain")
    torch.manual_seed(0)
    model = _stage1(build_model(_cfg(folder, "MODEL.ROI_HEADS.NAME", "StandardROIHeads")))
    assert type(model.roi_heads).__name__ == "StandardROIHeads"
    DetectionCheckpointer(model, save_dir=str(folder)).save("model_final")
    return folder / "model_final.pth"


def test_plain_detectron2_checkpoint_loads_with_only_calibration_keys_missing(plain_checkpoint, tmp_path):
    model = build_model(_cfg(tmp_path, *DISALIGN))
    keys = _incompatible_keys(model, plain_checkpoint)
    assert set(keys.missing_keys) == CALIBRATION_KEYS
    assert not keys.unexpected_keys and not keys.incorrect_shapes
    # frozen for stage 2 (BatchNorm -> FrozenBatchNorm2d): still only the calibration is new
    stage2 = prepare_stage2_model(build_model(_cfg(tmp_path, *DISALIGN)))
    keys = _incompatible_keys(stage2, plain_checkpoint)
    assert set(keys.missing_keys) == CALIBRATION_KEYS and not keys.unexpected_keys


def test_cosine_checkpoints(plain_checkpoint, tmp_path):
    # a cosine stage 1 into cosine + DisAlign: only the calibration is new
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(_cfg(tmp_path, *COSINE)), save_dir=str(tmp_path)).save("cosine")
    keys = _incompatible_keys(build_model(_cfg(tmp_path, *COSINE, *DISALIGN)), tmp_path / "cosine.pth")
    assert set(keys.missing_keys) == CALIBRATION_KEYS and not keys.unexpected_keys
    # a linear Detectron2 checkpoint into a cosine model: the scale is new, the bias unused
    keys = _incompatible_keys(build_model(_cfg(tmp_path, *COSINE)), plain_checkpoint)
    assert keys.missing_keys == ["roi_heads.box_predictor.cls_score.scale"]
    assert keys.unexpected_keys == ["roi_heads.box_predictor.cls_score.bias"]


@pytest.mark.parametrize("cosine", [False, True])
def test_stage2_starts_at_stage1_and_changes_only_the_calibration(cosine, tmp_path):
    extra = COSINE if cosine else []
    torch.manual_seed(0)
    stage1 = _stage1(build_model(_cfg(tmp_path, *extra)))
    DetectionCheckpointer(stage1, save_dir=str(tmp_path)).save("stage1")

    model = prepare_stage2_model(build_model(_cfg(tmp_path, *extra, *DISALIGN)))
    DetectionCheckpointer(model).load(str(tmp_path / "stage1.pth"))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == CALIBRATION_KEYS

    batch = instance_batch(seed=7)
    stage1.eval(), model.eval()
    with torch.no_grad():
        before_out, after_out = stage1(batch)[0]["instances"], model(batch)[0]["instances"]
    assert len(after_out) > 0
    assert torch.equal(before_out.scores, after_out.scores)  # identity at initialisation
    assert torch.equal(before_out.pred_classes, after_out.pred_classes)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, 3, lr=0.5, seed=20)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= CALIBRATION_KEYS, changed - CALIBRATION_KEYS
    assert any("running_mean" in k for k in before)  # frozen BatchNorm statistics did not move
    if cosine:
        assert "roi_heads.box_predictor.cls_score.scale" in before  # the stage-1 scale is frozen


def test_stage2_runs_no_branch_whose_loss_trains_nothing(datasets_root, tmp_path):
    """DisAlign's stage 2 trains the calibration only: the RPN loss (and its anchor matching),
    the box regression and the mask branch are left out. Each comes back when one of its
    parameters is made trainable, and its loss then has no gradient for the calibration."""
    torch.manual_seed(0)
    model = prepare_stage2_model(build_model(_cfg(tmp_path, *DISALIGN)))
    model.train()
    calibration = [p for p in model.parameters() if p.requires_grad]
    branches = {"loss_mask": model.roi_heads.mask_head,
                "loss_box_reg": model.roi_heads.box_predictor.bbox_pred,
                "loss_rpn_cls": model.proposal_generator.rpn_head}
    calls = {name: [] for name in branches}
    for name, module in branches.items():
        module.register_forward_hook(lambda *_, name=name: calls[name].append(1))
    rpn = model.proposal_generator
    anchor_matching = []
    matcher = rpn.anchor_matcher
    rpn.anchor_matcher = lambda *a: anchor_matching.append(1) or matcher(*a)

    def step():
        for called in (*calls.values(), anchor_matching):
            called.clear()
        with EventStorage(0):
            return model(instance_batch(seed=3))

    losses = step()
    assert set(losses) == {"loss_cls"}
    assert calls == {"loss_mask": [], "loss_box_reg": [], "loss_rpn_cls": [1]}  # RPN head: proposals
    assert anchor_matching == []
    assert all(g is not None for g in torch.autograd.grad(losses["loss_cls"], calibration))
    for name, module in branches.items():
        next(module.parameters()).requires_grad_(True)
        losses_with_branch = step()
        assert name in losses_with_branch and calls[name]
        assert bool(anchor_matching) == (name == "loss_rpn_cls")
        branch_losses = set(losses_with_branch) - set(losses)
        assert branch_losses == ({"loss_rpn_cls", "loss_rpn_loc"} if name == "loss_rpn_cls" else {name})
        branch_loss = sum(losses_with_branch[k] for k in branch_losses)
        assert torch.autograd.grad(branch_loss, calibration, allow_unused=True) == (None,) * len(calibration)
        next(module.parameters()).requires_grad_(False)
    # Stage 1 (everything trainable) keeps every loss.
    stage1 = build_model(_cfg(tmp_path))
    stage1.train()
    with EventStorage(0):
        assert set(stage1(instance_batch(seed=3))) == {
            "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}


def test_long_tail_rpn_is_detectron2s_rpn_when_it_trains(tmp_path):
    """Same parameters, proposals and losses as Detectron2's RPN in a stage-1 step."""
    results = []
    for name in ("RPN", "LongTailRPN"):
        torch.manual_seed(0)
        model = build_model(_cfg(tmp_path, "MODEL.PROPOSAL_GENERATOR.NAME", name))
        model.train()
        torch.manual_seed(1)
        with EventStorage(0):
            losses = model(instance_batch(seed=3))
        results.append((model.state_dict(), losses))
    (weights, losses), (weights_lt, losses_lt) = results
    assert type(model.proposal_generator).__name__ == "LongTailRPN"
    assert weights.keys() == weights_lt.keys()
    assert all(torch.equal(weights[k], weights_lt[k]) for k in weights)
    assert losses.keys() == losses_lt.keys() and {"loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    assert all(torch.equal(losses[k], losses_lt[k]) for k in losses)


def test_stage2_keeps_the_box_deltas_when_other_branches_train_on_predicted_boxes(tmp_path):
    model = prepare_stage2_model(build_model(_cfg(tmp_path, *DISALIGN,
                                                  "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", "True")))
    model.train()
    with EventStorage(0):
        losses = model(instance_batch(seed=3))  # the box deltas make the predicted boxes
    # Their loss trains nothing (regression frozen, features without gradient): left out.
    assert set(losses) == {"loss_cls"}
