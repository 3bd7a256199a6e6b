"""The papers' backbones at tiny widths: ResNet-c (deep stem, Detectron2 DeepLab's ResNet), HRNet
and ResNeSt (timm) under every decode head and as MEDOE's experts' backbone; a short training
with evaluation, a DisAlign stage 2 from its checkpoint; published ImageNet weights converted."""
import json

import pytest
import torch

from conftest import TINY_TRAINING, random_batch, run_tool, tiny_cfg

from detectron2.modeling import build_backbone, build_model

from longtailseg.engine import build_model as build_checked_model
from longtailseg.errors import ConfigError
from longtailseg.modeling.backbone.timm_backbone import timm_model_kwargs

# synthetic config -> the head it ships with and the feature that head reads
BACKBONES = {
    "deeplab_v3_plus_R_c": "res5",
    "ocrnet_hrnet": "concat",
    "fcn_resnest": "res5",
}
HEADS = ["LongTailDeepLabV3PlusHead", "LongTailFCNHead", "LongTailPSPHead", "LongTailOCRHead"]


def _head_opts(head, feature):
    if head == "LongTailDeepLabV3PlusHead":
        return ["MODEL.SEM_SEG_HEAD.NAME", head, "MODEL.SEM_SEG_HEAD.IN_FEATURES", '["res2", "res5"]',
                "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 32]
    return ["MODEL.SEM_SEG_HEAD.NAME", head, "MODEL.SEM_SEG_HEAD.IN_FEATURES", f'["{feature}"]',
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.SEM_SEG_HEAD.OCR_KEY_CHANNELS", 16,
            "MODEL.SEM_SEG_HEAD.OCR_AUX_CHANNELS", 0]


def _check_backbone_gradients(model, backbone, head):
    with_grad = [p.grad is not None for p in model.backbone.parameters()]
    if backbone == "ocrnet_hrnet" and head == "LongTailDeepLabV3PlusHead":
        # DeepLabV3+ reads res2 and res5 alone: HRNet's last res3 / res4 branch layers feed nothing
        assert with_grad[0] and sum(with_grad) > 0.8 * len(with_grad)
    else:
        assert all(with_grad), "the whole backbone trains"


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_head_trains_and_predicts_on_every_new_backbone(backbone, head, datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(f"synthetic/{backbone}.yaml", tmp_path, *_head_opts(head, BACKBONES[backbone])))
    assert type(model.sem_seg_head).__name__ == head
    model.train()
    losses = model(random_batch())
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    _check_backbone_gradients(model, backbone, head)
    model.eval()
    with torch.no_grad():  # a size no stride divides: the backbone pads, the output is cropped back
        out = model([{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}])
    assert out[0]["sem_seg"].shape == (19, 40, 56)


@pytest.mark.parametrize("expert_head", ["LongTailDeepLabV3PlusHead", "own"])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_medoe_experts_on_every_new_backbone(backbone, expert_head, datasets_root, tmp_path):
    cfg_opts = [] if expert_head == "own" else _head_opts(expert_head, BACKBONES[backbone])
    base = tiny_cfg(f"synthetic/{backbone}.yaml", tmp_path, *cfg_opts)
    head = base.MODEL.SEM_SEG_HEAD.NAME
    torch.manual_seed(0)
    model = build_model(tiny_cfg(f"synthetic/{backbone}.yaml", tmp_path, *cfg_opts,
                                 "MODEL.SEM_SEG_HEAD.NAME", "MEDOEHead", "MODEL.MEDOE.EXPERT_HEAD", head,
                                 "MODEL.MEDOE.EXPERT_CHANNELS", 8))
    experts = model.sem_seg_head.experts
    assert len(experts) == 3 and all(type(e).__name__ == head for e in experts)
    model.train()
    losses = model(random_batch())
    assert all(torch.isfinite(v) for v in losses.values()) and sum(losses.values()).item() > 0
    sum(losses.values()).backward()
    _check_backbone_gradients(model, backbone, head)
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 32, 32) * 255, "height": 32, "width": 32}])
    scores = out[0]["sem_seg"]  # expert 1's (ENSEMBLE "none", MED)
    assert scores.shape == (19, 32, 32) and torch.isfinite(scores).all()


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    """20 iterations of each new backbone's synthetic config through tools/train_net.py, with the
    final evaluation (backbone -> OUTPUT_DIR)."""
    runs = {}
    for backbone in sorted(BACKBONES):
        out = tmp_path_factory.mktemp(backbone)
        run_tool("train_net.py", "--config-file", f"configs/synthetic/{backbone}.yaml", *TINY_TRAINING,
                 "SOLVER.MAX_ITER", 20, "OUTPUT_DIR", out, datasets_root=datasets_root)
        runs[backbone] = out
    return runs


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_trains_20_iterations_and_evaluates(backbone, trained):
    out = trained[backbone]
    assert (out / "model_final.pth").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(0 < loss < 10 for loss in losses)
    results = json.loads((out / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json").read_text())
    assert 0 <= results["sem_seg"]["mIoU"] <= 100 and 0 <= results["sem_seg"]["mACC-tail"] <= 100


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_disalign_stage2_starts_from_the_checkpoint(backbone, trained, datasets_root, tmp_path):
    weights = str(trained[backbone] / "model_final.pth")
    stage1 = build_checked_model(tiny_cfg(f"synthetic/{backbone}.yaml", tmp_path, "MODEL.WEIGHTS", weights))
    stage2 = build_checked_model(
        tiny_cfg(f"synthetic/{backbone}.yaml", tmp_path, "MODEL.WEIGHTS", weights,
                 "MODEL.LONG_TAIL.DISALIGN.ENABLED", "True", "MODEL.LONG_TAIL.GRW.ENABLED", "True"),
        weights="stage1")
    trainable = [n for n, p in stage2.named_parameters() if p.requires_grad]
    assert trainable and all(".calibration." in n for n in trainable)
    batch = [{"image": torch.rand(3, 32, 32) * 255, "height": 32, "width": 32}]
    stage1.eval(), stage2.eval()
    with torch.no_grad():  # the calibration starts as the identity on the loaded stage-1 model
        assert torch.allclose(stage1(batch)[0]["sem_seg"], stage2(batch)[0]["sem_seg"], atol=1e-5)
    stage2.train()
    optimizer = torch.optim.SGD([p for p in stage2.parameters() if p.requires_grad], lr=0.1)
    frozen = {k: v.clone() for k, v in stage2.state_dict().items() if ".calibration." not in k}
    loss = sum(stage2(random_batch()).values())
    optimizer.zero_grad(), loss.backward(), optimizer.step()
    assert torch.isfinite(loss)
    after = stage2.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items()), "stage 2 changed a frozen tensor"


# ------------------------------------------------------------------ published weights converted

def _timm_model(cfg, features_only=False, **kwargs):
    import timm

    extra = dict(features_only=True, out_indices=(1, 2, 3, 4)) if features_only else {}
    kw = timm_model_kwargs(cfg.MODEL.TIMM)
    if not features_only:
        kw.pop("feature_location", None)  # HRNet's classification model has its head
    return timm.create_model(cfg.MODEL.TIMM.NAME, **kw, **extra, **kwargs)


@pytest.mark.parametrize("backbone", ["ocrnet_hrnet", "fcn_resnest"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_weights_round_trip(backbone, suffix, datasets_root, tmp_path):
    """A timm release (the classification model's state dict, random here) converted and loaded
    through MODEL.WEIGHTS: every backbone tensor is the file's, and the backbone computes what
    timm computes with timm's own loading of that file."""
    from safetensors.torch import save_file

    from longtailseg.io import write_atomically
    from longtailseg.modeling.backbone.weight_conversion import convert_for_backbone, read_published_weights

    cfg = tiny_cfg(f"synthetic/{backbone}.yaml", tmp_path, "MODEL.TIMM.NORM", "BN")
    torch.manual_seed(1)
    published = _timm_model(cfg)
    for m in published.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    state = published.state_dict()
    source = tmp_path / f"published{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(source))
    else:
        torch.save(state, source)

    converted = convert_for_backbone(build_backbone(cfg), cfg, read_published_weights(str(source)))
    target = tmp_path / "converted.pth"
    write_atomically(str(target), lambda f: torch.save({"model": converted}, f), binary=True)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(target)
    model = build_checked_model(cfg, weights="pretrained")
    loaded = model.backbone.state_dict()
    body = [k for k in loaded if not k.endswith("num_batches_tracked")]
    assert body and all(torch.equal(loaded[k], state[k[len("body."):]]) for k in body)

    reference = _timm_model(cfg, features_only=True, pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(source))).eval()
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ours = model.backbone(x)
        theirs = reference(x)
    for name, expected in zip(["res2", "res3", "res4", "res5"] if backbone == "ocrnet_hrnet" else ["res2", "res5"],
                              theirs if backbone == "ocrnet_hrnet" else [theirs[0], theirs[3]]):
        assert torch.allclose(ours[name], expected, atol=1e-5), name


def _timm_resnet_c(cfg):
    """timm's resnet50c (deep stem 3x3 convs, 2 x stem width out) at the synthetic config's widths."""
    import timm

    r = cfg.MODEL.RESNETS
    return timm.create_model("resnet50c", stem_width=r.STEM_OUT_CHANNELS // 2,
                             channels=tuple(r.WIDTH_PER_GROUP * 2 ** i for i in range(4)))


def test_resnet_c_weights_of_timm_and_mmcv_round_trip(datasets_root, tmp_path):
    """ResNet-50c weights in timm's and mmcv's layouts (random here) converted by the tool: the
    Detectron2 deep-stem ResNet then computes timm's resnet50c features."""
    from longtailseg.modeling.backbone.weight_conversion import convert_for_backbone, read_published_weights

    cfg = tiny_cfg("synthetic/deeplab_v3_plus_R_c.yaml", tmp_path, "MODEL.RESNETS.RES4_DILATION", 1,
                   "MODEL.RESNETS.RES5_DILATION", 1, "MODEL.RESNETS.NORM", "BN")
    torch.manual_seed(2)
    published = _timm_resnet_c(cfg).eval()
    for m in published.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    state = published.state_dict()
    stem = {"conv1.0": "stem.0", "conv1.1": "stem.1", "conv1.3": "stem.3", "conv1.4": "stem.4",
            "conv1.6": "stem.6", "bn1": "stem.7"}
    mmcv = {(stem[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]) if k.rsplit(".", 1)[0] in stem else k: v
            for k, v in state.items()}
    torch.save(state, tmp_path / "timm.pth")
    torch.save({"meta": {}, "state_dict": mmcv}, tmp_path / "mmcv.pth")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = published.forward_features(x)
    opts = ["MODEL.RESNETS.RES4_DILATION", 1, "MODEL.RESNETS.RES5_DILATION", 1, "MODEL.RESNETS.NORM", "BN"]
    # the command for timm's file; the same conversion in-process for mmcv's (one process less)
    run_tool("convert_pretrained_weights.py", "--config-file", "configs/synthetic/deeplab_v3_plus_R_c.yaml",
             "--input", tmp_path / "timm.pth", "--output", tmp_path / "timm_d2.pth", *opts)
    converted = convert_for_backbone(build_backbone(cfg), cfg, read_published_weights(str(tmp_path / "mmcv.pth")))
    torch.save({"model": converted}, tmp_path / "mmcv_d2.pth")
    for layout in ("timm", "mmcv"):
        cfg.defrost()
        cfg.MODEL.WEIGHTS = str(tmp_path / f"{layout}_d2.pth")
        model = build_checked_model(cfg, weights="pretrained").eval()
        with torch.no_grad():
            assert torch.allclose(model.backbone(x)["res5"], expected, atol=1e-4), layout
        assert torch.equal(model.backbone.stem.conv1.weight, state["conv1.0.weight"])


def test_weights_of_another_model_are_refused_in_one_line(datasets_root, tmp_path):
    cfg = tiny_cfg("synthetic/fcn_resnest.yaml", tmp_path)
    cfg.defrost()
    cfg.MODEL.TIMM.MODEL_KWARGS.stem_width = 16  # the file is of a wider stem
    torch.save(_timm_model(cfg).state_dict(), tmp_path / "wide.pth")
    proc = run_tool("convert_pretrained_weights.py", "--config-file", "configs/synthetic/fcn_resnest.yaml",
                    "--input", tmp_path / "wide.pth", "--output", tmp_path / "out.pth", check=False)
    assert proc.returncode == 2
    assert "does not fit this config's backbone" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.pth").exists()


def test_timm_backbone_config_errors_are_one_line(datasets_root, tmp_path):
    with pytest.raises(ConfigError, match="MODEL.TIMM.NAME"):
        build_model(tiny_cfg("synthetic/fcn_resnest.yaml", tmp_path, "MODEL.TIMM.NAME", "resnest_nothing"))
    with pytest.raises(ConfigError, match="MODEL.TIMM.OUT_FEATURES"):
        build_model(tiny_cfg("synthetic/fcn_resnest.yaml", tmp_path, "MODEL.TIMM.OUT_FEATURES", '["res6"]'))
    with pytest.raises(ConfigError, match="MODEL.TIMM.NORM"):
        build_model(tiny_cfg("synthetic/fcn_resnest.yaml", tmp_path, "MODEL.TIMM.NORM", "GN"))
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.FREEZE_AT"):
        build_model(tiny_cfg("synthetic/fcn_resnest.yaml", tmp_path, "MODEL.BACKBONE.FREEZE_AT", 2))
    with pytest.raises(ConfigError, match="MODEL.TIMM.MODEL_KWARGS"):  # HRNet cannot dilate
        build_model(tiny_cfg("synthetic/ocrnet_hrnet.yaml", tmp_path, "MODEL.TIMM.OUTPUT_STRIDE", 8))


def test_training_without_the_converted_imagenet_file_is_one_line(datasets_root, tmp_path):
    proc = run_tool("train_net.py", "--config-file", "configs/synthetic/fcn_resnest.yaml", *TINY_TRAINING,
                    "MODEL.WEIGHTS", tmp_path / "pretrained/resnest101e.pth", "OUTPUT_DIR", tmp_path / "out",
                    datasets_root=datasets_root, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "does not exist" in proc.stderr and "convert_pretrained_weights.py" in proc.stderr
