"""MEDOE head: experts from every registered head, gradient routing, stage 2, end to end."""
import json

import pytest
import torch

from conftest import TINY_TRAINING, random_batch, run_tool, tiny_cfg

from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from torch.nn.modules.dropout import _DropoutNd

from longtailseg.engine import stage2
from longtailseg.errors import ConfigError

MEDOE = "configs/synthetic/medoe_deeplab.yaml"
MOE = "configs/synthetic/medoe_deeplab_moe.yaml"
# The synthetic config of each registered expert head.
EXPERT_CONFIGS = {
    "LongTailDeepLabV3PlusHead": "synthetic/deeplab_v3_plus.yaml",
    "LongTailFCNHead": "synthetic/fcn.yaml",
    "LongTailPSPHead": "synthetic/pspnet.yaml",
    "LongTailOCRHead": "synthetic/ocrnet.yaml",
    "LongTailSegFormerHead": "synthetic/segformer.yaml",
}


# Experts 2..K narrower than the synthetic heads (64 channels), as in medoe_deeplab.yaml.
EXPERT_CHANNELS = 16


def medoe_cfg(output_dir, expert="LongTailDeepLabV3PlusHead", *opts):
    return tiny_cfg(EXPERT_CONFIGS[expert], output_dir, "MODEL.SEM_SEG_HEAD.NAME", "MEDOEHead",
                    "MODEL.MEDOE.EXPERT_HEAD", expert, "MODEL.MEDOE.EXPERT_CHANNELS", EXPERT_CHANNELS,
                    *opts)


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("expert", sorted(EXPERT_CONFIGS))
def test_every_head_serves_as_expert(expert, datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(medoe_cfg(tmp_path, expert))
    head = model.sem_seg_head
    assert [type(e).__name__ for e in head.experts] == [expert] * 3
    # Expert 1 has the head's width, experts 2 and 3 EXPERT_CHANNELS, up to their classifiers.
    assert [e.predictor.in_channels for e in head.experts] == [64, EXPERT_CHANNELS, EXPERT_CHANNELS]
    # Class sets from the tiny set's statistics: all / body + tail / tail.
    stats = json.loads((tmp_path / "class_stats.json").read_text())
    groups = stats["groups"]
    owned = [sorted(torch.nonzero(m).flatten().tolist()) for m in head.expert_masks]
    assert owned == [list(range(19)), sorted(groups["body"] + groups["tail"]), sorted(groups["tail"])]

    model.train()
    losses = model(random_batch())
    assert {f"loss_sem_seg_expert{k}" for k in (1, 2, 3)} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}])
    scores = out[0]["sem_seg"]  # ENSEMBLE "none": expert 1's logits, as a single head's
    assert scores.shape == (19, 40, 56) and torch.isfinite(scores).all()
    assert scores.sum(0).sub(1).abs().max() > 1e-2  # scores, not probabilities


def test_only_the_first_expert_updates_the_backbone(datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(medoe_cfg(tmp_path))
    model.train()
    batch = random_batch(seed=1)
    # Labels of every group, so that each expert has its own pixels and interfering ones.
    losses = model(batch)
    others = sum(v for k, v in losses.items() if not k.endswith("expert1"))
    assert others.item() > 0
    others.backward()
    backbone_grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in backbone_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.sem_seg_head.experts[1].parameters())
    # Expert 1's parameters include the res2 projection the other experts read.
    assert all(p.grad is None for p in model.sem_seg_head.experts[0].parameters())

    model.zero_grad(set_to_none=True)
    first = sum(v for k, v in model(batch).items() if k.endswith("expert1"))
    first.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_oracle_without_labels_is_refused(datasets_root, tmp_path):
    model = build_model(medoe_cfg(tmp_path, "LongTailDeepLabV3PlusHead", "MODEL.MEDOE.ORACLE", "True"))
    model.eval()
    with pytest.raises(ConfigError, match="ORACLE needs the test labels"):
        with torch.no_grad():
            model([{"image": torch.rand(3, 32, 32) * 255, "height": 32, "width": 32}])


def _count_expert_calls(head):
    """Forward hooks on every module inside each expert (the head calls their decode /
    classify, which run those modules); returns the live per-expert counts."""
    calls = [0] * len(head.experts)
    for k, expert in enumerate(head.experts):
        for module in expert.modules():
            module.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    return calls


def test_inference_runs_only_the_experts_the_ensemble_reads(datasets_root, tmp_path):
    from longtailseg.longtail.experts import expert_probabilities

    torch.manual_seed(0)
    model = build_model(medoe_cfg(tmp_path, "LongTailDeepLabV3PlusHead", "MODEL.MEDOE.ENSEMBLE", "MOE"))
    model.eval()
    head = model.sem_seg_head
    with torch.no_grad():
        head.decision_maker.shift.normal_()
        head.decision_maker.log_scale.normal_(std=0.3)
        head.decision_maker.decision_logits.normal_()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 40, 56))
        # What every ensemble read before: all experts' probabilities, stacked.
        probs = expert_probabilities(head.expert_logits(features), head.expert_masks)
        calls = _count_expert_calls(head)
        head.ensemble = "none"
        alone = head(features)[0]
        assert calls[1:] == [0, 0] and calls[0] > 0
        # Expert 1's logits bit for bit, as the single-head model returns them; same argmax as
        # its probabilities in the stack.
        assert torch.equal(alone, head.expert_logits(features)[0])
        assert torch.equal(alone.argmax(dim=1), probs[0].argmax(dim=1))

        head.ensemble = "MOE"
        moe = head(features)[0]
        assert all(c > 0 for c in calls)
        # The weighted sum of log-probabilities equals the formula on the stacked probabilities.
        shape = (3, 1, probs.shape[2], 1, 1)
        maker = head.decision_maker
        log_p = torch.where(maker.masks.view(shape), probs.clamp_min(1e-30).log(), torch.zeros_like(probs))
        scores = (maker.decision_weights().view(shape)
                  * (maker.log_scale.exp().view(shape) * log_p + maker.shift.view(shape))).sum(0)
        assert (moe - torch.softmax(scores, dim=1)).abs().max() < 1e-5


def test_moe_stage2_trains_only_the_decision_maker(datasets_root, tmp_path):
    torch.manual_seed(0)
    stage1 = build_model(medoe_cfg(tmp_path))
    cfg = medoe_cfg(tmp_path, "LongTailDeepLabV3PlusHead", "MODEL.MEDOE.ENSEMBLE", "MOE")
    assert stage2.is_stage2(cfg)
    model = stage2.prepare_stage2_model(build_model(cfg))
    missing, unexpected = model.load_state_dict(stage1.state_dict(), strict=False)
    assert sorted(missing) == [f"sem_seg_head.decision_maker.{n}"
                               for n in ("decision_logits", "log_scale", "shift")]
    assert unexpected == []
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    # frozen experts: no BatchNorm updates and no dropout (every stage 2 freezes them this way)
    expert_modules = list(model.sem_seg_head.experts.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in expert_modules)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, _DropoutNd)) for m in expert_modules)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for seed in range(3):
        losses = model(random_batch(seed=seed))
        assert set(losses) == {"loss_sem_seg_moe", "loss_tail_penalty"}
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("sem_seg_head.decision_maker.") for k in changed), changed


def test_stage1_then_moe_then_ensembles_and_oracle_end_to_end(datasets_root, tmp_path):
    s1, s2 = tmp_path / "med", tmp_path / "moe"
    run_tool("train_net.py", "--config-file", MEDOE, *TINY_TRAINING, "SOLVER.MAX_ITER", 3,
             "OUTPUT_DIR", s1, datasets_root=datasets_root)
    proc = run_tool("train_net.py", "--config-file", MOE, *TINY_TRAINING, "SOLVER.MAX_ITER", 3,
                    "MODEL.WEIGHTS", s1 / "model_final.pth", "OUTPUT_DIR", s2, datasets_root=datasets_root)
    assert "sem_seg_head.decision_maker.{decision_logits, log_scale, shift}" in proc.stdout + proc.stderr
    # Stage 2 of another expert width does not fit the stage-1 checkpoint: refused before training.
    proc = run_tool("train_net.py", "--config-file", MOE, *TINY_TRAINING, "SOLVER.MAX_ITER", 3,
                    "MODEL.WEIGHTS", s1 / "model_final.pth", "MODEL.MEDOE.EXPERT_CHANNELS", 8,
                    "OUTPUT_DIR", tmp_path / "other_width", datasets_root=datasets_root, check=False)
    assert proc.returncode != 0
    error = [l for l in proc.stderr.splitlines() if l.startswith("error:")][0]
    assert "does not fit this model" in error and "experts.1." in error
    before = torch.load(s1 / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    after = torch.load(s2 / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    for key, value in before.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, after[key]), f"MOE changed frozen {key}"

    def results(out):
        return json.loads((out / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json").read_text())["sem_seg"]

    assert "mACC-tail-uniform" in results(s1) and "mACC-tail-uniform" in results(s2)
    for name, opts in {"oracle": ["MODEL.MEDOE.ORACLE", "True"],
                       "group_average": ["MODEL.MEDOE.ENSEMBLE", "group_average"]}.items():
        out = tmp_path / name
        run_tool("train_net.py", "--eval-only", "--config-file", MEDOE, *TINY_TRAINING,
                 "MODEL.WEIGHTS", s1 / "model_final.pth", *opts, "OUTPUT_DIR", out,
                 datasets_root=datasets_root)
        assert 0 <= results(out)["mACC-tail"] <= 100


def test_moe_without_stage1_weights_says_how_to_make_them(datasets_root, tmp_path):
    proc = run_tool("train_net.py", "--config-file", MOE, "MODEL.WEIGHTS", tmp_path / "none.pth",
                    "OUTPUT_DIR", tmp_path, datasets_root=datasets_root, check=False)
    assert proc.returncode == 2
    line = [l for l in proc.stderr.splitlines() if l.startswith("error:")][0]
    assert "--config-file configs/synthetic/medoe_deeplab.yaml" in line


def test_expert_channels_sets_the_width_of_experts_2_to_k(datasets_root, tmp_path):
    model = build_model(medoe_cfg(tmp_path, "LongTailDeepLabV3PlusHead", "MODEL.MEDOE.EXPERT_CHANNELS", 8))
    experts = model.sem_seg_head.experts
    for k, width in enumerate([64, 8, 8]):
        aspp = experts[k].decoder["res5"]["project_conv"]
        assert aspp.convs[0].weight.shape[:2] == (width, 512)  # reads the backbone's res5
        assert aspp.project.weight.shape[0] == width
        fuse = experts[k].decoder["res2"]["fuse_conv"]
        assert fuse[0].weight.shape[:2] == (width, 16 + width)  # projected res2 (16) + ASPP
        assert fuse[1].weight.shape[:2] == (width, width)
        assert experts[k].predictor.weight.shape == (19, width, 1, 1)


def test_experts_share_the_projection_of_the_backbone_features(datasets_root, tmp_path):
    torch.manual_seed(0)
    cfg = medoe_cfg(tmp_path)
    model = build_model(cfg)
    head = model.sem_seg_head
    keys = [k for k in model.state_dict() if ".project_conv." in k and ".res2." in k]
    assert keys and all(k.startswith("sem_seg_head.experts.0.") for k in keys), keys
    assert all("project_conv" not in e.decoder["res2"] for e in head.experts[1:])

    # Parameters: the CE model's, plus per further expert a head of EXPERT_CHANNELS without its
    # projection.
    ce_cfg = tiny_cfg(EXPERT_CONFIGS["LongTailDeepLabV3PlusHead"], tmp_path / "ce")
    ce_model = build_model(ce_cfg)
    narrow_cfg = tiny_cfg(EXPERT_CONFIGS["LongTailDeepLabV3PlusHead"], tmp_path / "narrow",
                          "MODEL.SEM_SEG_HEAD.CONVS_DIM", EXPERT_CHANNELS,
                          "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", EXPERT_CHANNELS)
    narrow_head = build_model(narrow_cfg).sem_seg_head
    narrow_expert = parameter_count(narrow_head) - parameter_count(narrow_head.decoder["res2"]["project_conv"])
    assert parameter_count(model) == parameter_count(ce_model) + 2 * narrow_expert

    # Experts 2 and 3 read expert 1's projection: changing it changes their logits.
    model.eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 32, 32))
        before = head.expert_logits(features)
        for p in head.experts[0].decoder["res2"]["project_conv"].parameters():
            p.add_(torch.randn_like(p))
        after = head.expert_logits(features)
    assert all(not torch.allclose(b, a) for b, a in zip(before, after))


def test_expert_losses_put_l2_and_kl_at_the_logits_resolution(datasets_root, tmp_path):
    from longtailseg.longtail.experts import (expert_auxiliary_loss, expert_cross_entropy,
                                              labels_at)

    torch.manual_seed(0)
    model = build_model(medoe_cfg(tmp_path))
    model.train()
    head = model.sem_seg_head
    targets = torch.stack([b["sem_seg"] for b in random_batch(seed=3)])
    targets[:, :4] = 255  # ignored pixels too
    features = model.backbone(torch.randn(2, 3, 32, 32))
    torch.manual_seed(1)  # the same dropout masks in both passes
    losses = head.expert_losses(features, targets)
    torch.manual_seed(1)
    for k, ((_, logits), mask) in enumerate(zip(head.iter_decoder_logits(features), head.expert_masks)):
        assert logits.shape[-1] == targets.shape[-1] // 4  # the decoder's stride
        full = torch.nn.functional.interpolate(logits, size=targets.shape[-2:], mode="bilinear",
                                               align_corners=False)
        ce = expert_cross_entropy(full, targets, mask)
        aux = expert_auxiliary_loss(logits, labels_at(targets, logits.shape[-2:]), mask)
        assert torch.allclose(losses[f"loss_sem_seg_expert{k + 1}"], ce)
        assert torch.allclose(losses[f"loss_aux_expert{k + 1}"], aux * head.aux_loss_weight)


@pytest.mark.parametrize("value", [-1, -64])
def test_negative_expert_channels_is_a_one_line_config_error(value, datasets_root, tmp_path):
    with pytest.raises(ConfigError) as error:
        build_model(medoe_cfg(tmp_path, "LongTailDeepLabV3PlusHead", "MODEL.MEDOE.EXPERT_CHANNELS", value))
    message = str(error.value)
    assert "MODEL.MEDOE.EXPERT_CHANNELS" in message and "\n" not in message


def test_expert_channels_zero_gives_every_expert_the_heads_width(datasets_root, tmp_path):
    model = build_model(medoe_cfg(tmp_path, "LongTailOCRHead", "MODEL.MEDOE.EXPERT_CHANNELS", 0))
    widths = [(e.predictor.in_channels, e.key_channels) for e in model.sem_seg_head.experts]
    assert widths == [(64, 256)] * 3
    narrow = build_model(medoe_cfg(tmp_path, "LongTailOCRHead", "MODEL.MEDOE.EXPERT_CHANNELS", 8))
    assert [(e.predictor.in_channels, e.key_channels) for e in narrow.sem_seg_head.experts] == \
        [(64, 256), (8, 8), (8, 8)]
