"""PAT's systems: SegNet, U-Net, Attention U-Net and U-Net++ (VGG-style or smp encoder backbone,
decoder head ending in the LongTailClassifier), tiny widths on the synthetic set."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, TINY_TRAINING, random_batch, run_tool, tiny_cfg

from detectron2.modeling import build_model

HEADS = {
    "unet": "LongTailUNetHead",
    "attention_unet": "LongTailAttentionUNetHead",
    "unet_plusplus": "LongTailUNetPlusPlusHead",
    "segnet": "LongTailSegNetHead",
}
# Tiny widths for tests (the configs' layouts, narrower).
TINY_WIDTHS = {
    "unet": ["MODEL.VGG_ENCODER.CHANNELS", "[4, 8, 16, 32, 64]",
             "MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS", "[32, 16, 8, 8]"],
    "attention_unet": ["MODEL.VGG_ENCODER.CHANNELS", "[4, 8, 16, 32, 64]",
                       "MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS", "[32, 16, 8, 8]"],
    "unet_plusplus": ["MODEL.VGG_ENCODER.CHANNELS", "[4, 8, 16, 32, 64]",
                      "MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS", "[32, 16, 8, 8]"],
    "segnet": ["MODEL.VGG_ENCODER.CHANNELS", "[4, 8, 16, 32, 32]"],
}


def _cfg(name, output_dir, *opts):
    return tiny_cfg(f"synthetic/{name}.yaml", output_dir, *TINY_WIDTHS[name], *opts)


def _train_net(name, out, datasets_root, *opts, iters=20):
    return run_tool("train_net.py", "--config-file", f"configs/synthetic/{name}.yaml", *TINY_TRAINING,
                    *TINY_WIDTHS[name], "SOLVER.MAX_ITER", iters, "OUTPUT_DIR", out, *opts,
                    datasets_root=datasets_root)


@pytest.fixture(scope="module")
def pat_runs(datasets_root, tmp_path_factory):
    """20 iterations of each architecture with the PAT loss through tools/train_net.py, then its
    evaluation (one run per architecture, made when first asked for)."""
    runs = {}

    def run(name):
        if name not in runs:
            out = tmp_path_factory.mktemp(f"pat_{name}")
            _train_net(name, out, datasets_root, "MODEL.LONG_TAIL.LOSS.NAME", "PAT")
            runs[name] = out
        return runs[name]
    return run


@pytest.mark.parametrize("name", sorted(HEADS))
def test_trains_one_step_and_predicts_at_any_size(name, datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg(name, tmp_path))
    assert type(model.sem_seg_head).__name__ == HEADS[name]
    assert model.sem_seg_head.logits_stride == 1
    model.train()
    losses = model(random_batch())
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    for part in (model.backbone, model.sem_seg_head):
        assert all(p.grad is not None for n, p in part.named_parameters() if "calibration" not in n), \
            "every encoder and decoder parameter takes part in the loss"
    model.eval()
    with torch.no_grad():  # not a multiple of the encoder's 16 / 32: padded, then cropped back
        out = model([{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}])
    assert out[0]["sem_seg"].shape == (19, 40, 56)


@pytest.mark.parametrize("loss", ["CE", "PAT"])
@pytest.mark.parametrize("name", sorted(HEADS))
def test_twenty_steps_fit_a_batch(name, loss, datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg(name, tmp_path, "MODEL.LONG_TAIL.LOSS.NAME", loss)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = random_batch(n=2, seed=1)
    for item in batch:  # a label the pixel's colour decides: learnable, unlike random labels
        item["sem_seg"] = (item["image"][0] // 64).long()
    history = []
    for _ in range(20):
        loss_value = model(batch)["loss_sem_seg"]
        optimizer.zero_grad(), loss_value.backward(), optimizer.step()
        history.append(loss_value.item())
    assert all(map(torch.isfinite, map(torch.tensor, history)))
    assert history[-1] < 0.8 * history[0], history


@pytest.mark.parametrize("name", sorted(HEADS))
def test_trains_with_pat_and_evaluates_through_train_net(name, pat_runs):
    out = pat_runs(name)
    assert (out / "model_final.pth").is_file()
    results = json.loads((out / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json").read_text())
    assert 0 <= results["sem_seg"]["mIoU"] <= 100 and 0 <= results["sem_seg"]["DiceErr"] <= 1


def test_disalign_stage2_calibrates_a_segnet_checkpoint(pat_runs, datasets_root, tmp_path):
    stage1_weights = pat_runs("segnet") / "model_final.pth"
    run_tool("train_net.py", "--config-file", "configs/synthetic/disalign_segnet.yaml", *TINY_TRAINING,
             *TINY_WIDTHS["segnet"], "SOLVER.MAX_ITER", 3, "MODEL.WEIGHTS", stage1_weights,
             "OUTPUT_DIR", tmp_path, datasets_root=datasets_root)
    stage1 = torch.load(stage1_weights, map_location="cpu", weights_only=True)["model"]
    stage2 = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    for key, value in stage1.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, stage2[key]), f"stage 2 changed frozen {key}"
    assert not torch.equal(stage2["sem_seg_head.long_tail.calibration.beta"], torch.zeros(19))
    assert (tmp_path / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json").is_file()


def test_demo_draws_a_unet_prediction(pat_runs, datasets_root, tmp_path):
    image = sorted((datasets_root / "synthetic").glob("ADE*/images/validation/*.jpg"))[0]
    proc = run_tool("demo.py", "--config-file", "configs/synthetic/unet.yaml", "--input", image,
                    "--output", tmp_path, *TINY_TRAINING, *TINY_WIDTHS["unet"],
                    "MODEL.WEIGHTS", pat_runs("unet") / "model_final.pth", datasets_root=datasets_root)
    assert "wrote 1 image(s)" in proc.stdout
    assert (tmp_path / image.name.replace(".jpg", ".png")).is_file()


def test_segnet_unpools_each_stage_at_its_encoder_argmax(datasets_root, tmp_path):
    """Each decoder stage's input is zero except where the encoder's pooling found its maxima
    (plain upsampling would fill every position of the 2x2 windows)."""
    torch.manual_seed(0)
    model = build_model(_cfg("segnet", tmp_path)).eval()
    head = model.sem_seg_head
    unpooled = []
    for stage in head.decoder_stages:
        stage.register_forward_pre_hook(lambda m, args: unpooled.append(args[0]))
    with torch.no_grad():
        features = model.backbone((torch.rand(1, 3, 32, 32) - 0.5) * 4)
        head.decode(features)
    assert len(unpooled) == 5
    for k, x in enumerate(unpooled):
        i = 5 - k
        conv = features[f"conv{i}"]
        argmax = torch.zeros_like(conv).flatten(2).scatter_(
            2, features[f"pool{i}_indices"].flatten(2), 1.0).view_as(conv).bool()
        assert x.shape == conv.shape
        assert not (x[~argmax] != 0).any(), f"stage {i}: values off the encoder's argmax"
        # one position per 2x2 window, as pooling kept one
        assert torch.equal(F.avg_pool2d(argmax.float(), 2) * 4, torch.ones_like(features[f"pool{i}"]))
    # the deepest unpooling puts pool5's maxima back where conv5 had them
    top = features["conv5"] == F.interpolate(features["pool5"], scale_factor=2, mode="nearest")
    assert ((unpooled[0] != 0) <= top).all() and (unpooled[0] != 0).any()


def test_segnet_output_depends_on_the_pooling_indices(datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg("segnet", tmp_path)).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 32, 32))
        decoded = model.sem_seg_head.decode(features)
        top_left = dict(features)
        for i in range(1, 6):  # every window's first position instead of its argmax
            idx = features[f"pool{i}_indices"]
            h, w = idx.shape[-2:]
            rows = torch.arange(h).view(h, 1) * 2 * (2 * w)
            cols = torch.arange(w).view(1, w) * 2
            top_left[f"pool{i}_indices"] = (rows + cols).expand_as(idx).contiguous()
        assert not torch.allclose(model.sem_seg_head.decode(top_left), decoded)


@pytest.mark.parametrize("smp_class, head", [("Unet", "LongTailUNetHead"),
                                              ("UnetPlusPlus", "LongTailUNetPlusPlusHead")])
def test_smp_model_split_into_backbone_and_head_computes_the_same(smp_class, head, datasets_root, tmp_path):
    """The backbone + head hold smp's encoder and decoder: smp's weights load into them and the
    decoded features equal smp's (the oracle: segmentation-models-pytorch's own model)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    reference = getattr(smp, smp_class)("resnet18", encoder_weights=None, classes=19).eval()
    model = build_model(tiny_cfg("synthetic/unet_smp_resnet18.yaml", tmp_path,
                                 "MODEL.SEM_SEG_HEAD.NAME", head)).eval()
    model.backbone.encoder.load_state_dict(reference.encoder.state_dict())
    model.sem_seg_head.decoder.load_state_dict(reference.decoder.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model.sem_seg_head.decode(model.backbone(x))
        theirs = reference.decoder(reference.encoder(x))
    assert ours.shape == theirs.shape == (2, 16, 64, 64)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_attention_gate_scales_the_skip_by_its_coefficients():
    from longtailseg.modeling.sem_seg.unet import AttentionGate

    gate = AttentionGate(skip_channels=6, gate_channels=10, inter_channels=3).eval()
    skip, g = torch.randn(2, 6, 8, 8), torch.randn(2, 10, 4, 4)
    with torch.no_grad():
        alpha = gate.coefficients(skip, g)
        assert alpha.shape == (2, 1, 8, 8) and (alpha > 0).all() and (alpha < 1).all()
        assert torch.allclose(gate(skip, g), skip * alpha)
        # psi's conv at 0, its BatchNorm (initial statistics) shifting by 1.5: alpha = sigmoid(1.5)
        gate.psi[0].weight.zero_()
        gate.psi[1].bias.fill_(1.5)
        assert torch.allclose(gate(skip, g), skip * torch.sigmoid(torch.tensor(1.5)), atol=1e-6)


def test_attention_unet_gates_every_skip(datasets_root, tmp_path):
    head = build_model(_cfg("attention_unet", tmp_path)).sem_seg_head
    assert len(head.gates) == len(head.blocks) == 4  # conv1..conv4 are gated skips
    calls = []
    for gate in head.gates:
        gate.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    head.eval()
    with torch.no_grad():
        head.decode(build_model(_cfg("attention_unet", tmp_path)).eval().backbone(torch.randn(1, 3, 32, 32)))
    assert [c[1] for c in calls] == [32, 16, 8, 4]  # skips conv4, conv3, conv2, conv1


@pytest.mark.parametrize("name", sorted(HEADS))
def test_serves_as_a_medoe_expert(name, datasets_root, tmp_path):
    cfg = _cfg(name, tmp_path, "MODEL.SEM_SEG_HEAD.NAME", "MEDOEHead",
               "MODEL.MEDOE.EXPERT_HEAD", HEADS[name],
               "MODEL.MEDOE.EXPERT_CLASS_GROUPS", '["head+body+tail", "tail"]',
               "MODEL.MEDOE.EXPERT_CHANNELS", "2")
    model = build_model(cfg).train()
    experts = model.sem_seg_head.experts
    assert [type(e).__name__ for e in experts] == [HEADS[name]] * 2
    assert experts[0].predictor.in_channels > 2 and experts[1].predictor.in_channels == 2  # narrowed
    losses = model(random_batch())
    assert all(torch.isfinite(v) for v in losses.values()) and len(losses) >= 2
    sum(losses.values()).backward()


def test_decoder_block_count_that_does_not_fit_is_a_config_error(datasets_root, tmp_path):
    from longtailseg.errors import ConfigError

    with pytest.raises(ConfigError, match="UNET_DECODER_CHANNELS"):
        build_model(_cfg("unet_plusplus", tmp_path, "MODEL.SEM_SEG_HEAD.IN_FEATURES",
                         '["conv1", "conv2", "conv3", "conv4", "conv5"]'))
    with pytest.raises(ConfigError, match="IN_FEATURES"):
        build_model(_cfg("segnet", tmp_path, "MODEL.VGG_ENCODER.POOL_LAST", "False"))


def test_training_benchmark_times_pat_against_ce_on_the_real_unet_and_segnet_configs(tmp_path):
    out = tmp_path / "bench.json"
    configs = [f"configs/oxford_pet/{arch}{loss}.yaml" for arch in ("unet", "segnet") for loss in ("", "_pat")]
    args = [a for c in configs for a in ("--config-file", c)]
    run_tool("benchmark_training.py", *args, "--size", 32, "--iters", 2, "--warmup", 1, "--batch", 2,
             "--json", out, "MODEL.VGG_ENCODER.CHANNELS", "[4, 8, 16, 32, 32]",
             "MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS", "[16, 8, 8, 4]")
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["unet", "unet_pat", "segnet", "segnet_pat"]
    assert all(r["median_s"] > 0 and r["peak_mem_mb"] > 0 for r in rows)
    assert os.path.isfile(os.path.join(REPO, "configs/oxford_pet/segnet_pat.yaml"))
