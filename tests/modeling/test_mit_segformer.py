"""MiT backbone, SegFormer's all-MLP head and published MiT weights: tiny models on the synthetic set."""
import json
import re

import pytest
import torch

from conftest import TINY_TRAINING, random_batch, run_tool, tiny_cfg

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from longtailseg.errors import ConfigError
from longtailseg.modeling.mit import (
    MIT_VARIANTS,
    MiTBackbone,
    check_mit_weights,
    checkpoint_tensors,
    convert_mit_state_dict,
    detect_mit_weight_format,
    mit_architecture_of,
    mit_weights_for_detectron2,
)

SEGFORMER = "synthetic/segformer.yaml"


def convert_tool():
    """tools/convert_mit_weights.py as a module (its ``main`` run in this process: no start-up)."""
    import importlib.util
    import os

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("convert_mit_weights", os.path.join(REPO, "tools", "convert_mit_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
TINY_MIT = dict(embed_dims=(8, 16, 40, 64), depths=(1, 2, 1, 1), num_heads=(1, 2, 5, 8))
TINY_MIT_OPTS = ["MODEL.MIT.EMBED_DIMS", "[8, 16, 40, 64]", "MODEL.MIT.DEPTHS", "[1, 2, 1, 1]"]


def nvlabs_file(seed=0, **arch):
    """A random MiT in the NVlabs release's format: the encoder's names plus the ImageNet head."""
    torch.manual_seed(seed)
    mit = MiTBackbone(3, **(arch or TINY_MIT)).mit
    state = dict(mit.state_dict())
    state["head.weight"] = torch.randn(1000, (arch or TINY_MIT)["embed_dims"][-1])
    state["head.bias"] = torch.randn(1000)
    return state


# --------------------------------------------------------------------------------- the backbone

# Encoder parameters in millions as SegFormer's Table 1 prints them (rounded either way).
PUBLISHED_MILLIONS = {"mit_b0": 3.4, "mit_b1": 13.1, "mit_b2": 24.2, "mit_b3": 44.0, "mit_b4": 60.8, "mit_b5": 81.4}


@pytest.mark.parametrize("variant", sorted(MIT_VARIANTS))
def test_every_variant_has_the_published_size(variant):
    arch = MIT_VARIANTS[variant]
    backbone = MiTBackbone(3, arch["embed_dims"], arch["depths"], (1, 2, 5, 8))
    millions = sum(p.numel() for p in backbone.parameters()) / 1e6
    assert abs(millions - PUBLISHED_MILLIONS[variant]) < 0.1, millions
    shapes = backbone.output_shape()
    assert [shapes[n].channels for n in ("res2", "res3", "res4", "res5")] == list(arch["embed_dims"])
    assert [shapes[n].stride for n in ("res2", "res3", "res4", "res5")] == [4, 8, 16, 32]
    assert mit_architecture_of(backbone.mit.state_dict()) == (variant, arch["embed_dims"], arch["depths"])


def test_ade20k_segformer_b3_has_the_published_size():
    """MiT-B3 + the 768-channel all-MLP head on 150 classes: SegFormer-B3's 47.3M parameters
    (as SegFormer's ADE20K comparison prints it)."""
    from longtailseg import model_zoo

    cfg = model_zoo.get_config("ade20k/segformer_mit_b3.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 47.3) < 0.1


def test_backbone_outputs_match_its_strides_and_config_errors(datasets_root, tmp_path):
    cfg = tiny_cfg(SEGFORMER, tmp_path, *TINY_MIT_OPTS)
    backbone = build_model(cfg).backbone
    features = backbone(torch.rand(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "res2": (2, 8, 16, 24), "res3": (2, 16, 8, 12), "res4": (2, 40, 4, 6), "res5": (2, 64, 2, 3)}
    for opts, key in ((["MODEL.MIT.VARIANT", "mit_b9"], "MODEL.MIT.VARIANT"),
                      (["MODEL.MIT.EMBED_DIMS", "[8, 16, 40]"], "MODEL.MIT.EMBED_DIMS"),
                      (["MODEL.MIT.NUM_HEADS", "[3, 2, 5, 8]"], "MODEL.MIT"),
                      (["MODEL.MIT.OUT_FEATURES", "['res6']"], "MODEL.MIT.OUT_FEATURES")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            build_model(tiny_cfg(SEGFORMER, tmp_path, *TINY_MIT_OPTS, *opts))


def test_mit_under_the_fcn_head(datasets_root, tmp_path):
    """MiT serves any head reading res2..res5: FCN on its stride-32 res5."""
    torch.manual_seed(0)
    cfg = tiny_cfg("synthetic/fcn.yaml", tmp_path, "MODEL.BACKBONE.NAME", "build_mit_backbone",
                   "MODEL.MIT.VARIANT", "mit_b0", *TINY_MIT_OPTS, "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res5']")
    model = build_model(cfg)
    assert type(model.backbone).__name__ == "MiTBackbone" and model.sem_seg_head.stride == 32
    model.train()
    losses = model(random_batch(size=64))
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        assert model([{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}])[0]["sem_seg"].shape == (19, 40, 56)


# ------------------------------------------------------------------------------ the SegFormer head

def test_segformer_head_is_eq_1_and_trains(datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(SEGFORMER, tmp_path))
    head = model.sem_seg_head
    assert type(head).__name__ == "LongTailSegFormerHead" and head.logits_stride == 4
    # Linear(C_i, C) per stage, Linear(4C, C) fuse, Linear(C, N_cls): 1x1 convolutions.
    assert [(p.in_channels, p.out_channels, p.kernel_size) for p in head.projections.values()] == [
        (16, 64, (1, 1)), (32, 64, (1, 1)), (80, 64, (1, 1)), (128, 64, (1, 1))]
    assert (head.fuse.in_channels, head.fuse.out_channels) == (256, 64)
    assert (head.predictor.in_channels, head.predictor.out_channels) == (64, 19)
    features = model.backbone(torch.rand(1, 3, 64, 64))
    assert head.decode(features).shape == (1, 64, 16, 16)  # every stage at 1/4
    model.train()
    losses = model(random_batch())
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}])
    assert out[0]["sem_seg"].shape == (19, 40, 56)


@pytest.mark.parametrize("opts", [["MODEL.LONG_TAIL.BLV.ENABLED", "True"],
                                  ["MODEL.LONG_TAIL.GRW.ENABLED", "True"],
                                  ["MODEL.LONG_TAIL.LOSS.NAME", "PAT"]])
def test_long_tail_methods_change_the_segformer_loss(opts, datasets_root, tmp_path):
    torch.manual_seed(0)
    plain = build_model(tiny_cfg(SEGFORMER, tmp_path))
    method = build_model(tiny_cfg(SEGFORMER, tmp_path, *opts))
    method.load_state_dict(plain.state_dict())
    for m in (plain, method):  # training mode without dropout / drop-path randomness
        m.train()
        for module in m.modules():
            if isinstance(module, (torch.nn.Dropout2d, torch.nn.Dropout)) or "DropPath" in type(module).__name__:
                module.eval()
    torch.manual_seed(1)
    batch = random_batch(seed=2)
    a, b = plain(batch)["loss_sem_seg"], method(batch)["loss_sem_seg"]
    assert torch.isfinite(b) and not torch.allclose(a, b)


def test_disalign_is_identity_at_init_on_segformer(datasets_root, tmp_path):
    torch.manual_seed(0)
    plain = build_model(tiny_cfg(SEGFORMER, tmp_path))
    calibrated = build_model(tiny_cfg(SEGFORMER, tmp_path, "MODEL.LONG_TAIL.DISALIGN.ENABLED", "True"))
    missing, unexpected = calibrated.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(".calibration." in k for k in missing) and not unexpected
    plain.eval(), calibrated.eval()
    batch = [{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}]
    with torch.no_grad():
        a, b = plain(batch)[0]["sem_seg"], calibrated(batch)[0]["sem_seg"]
    assert torch.allclose(a, b, atol=1e-6) and a.std() > 0


def test_segformer_trains_evaluates_and_disalign_stage2_starts_from_it(datasets_root, tmp_path):
    """train_net: 20 AdamW iterations of the synthetic SegFormer and its evaluation, then DisAlign's
    stage 2 from its checkpoint (only the calibration trains)."""
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    run_tool("train_net.py", "--config-file", f"configs/{SEGFORMER}", *TINY_TRAINING, "SOLVER.MAX_ITER", 20,
             "SOLVER.WARMUP_ITERS", 0, "OUTPUT_DIR", s1, datasets_root=datasets_root)
    results = json.loads((s1 / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json").read_text())
    assert 0 <= results["sem_seg"]["mIoU"] <= 100 and 0 <= results["sem_seg"]["mACC-tail"] <= 100
    assert "optimizer ADAMW: base lr 0.0006, parameters outside the backbone at 10.0x" in (s1 / "log.txt").read_text()
    proc = run_tool("train_net.py", "--config-file", f"configs/{SEGFORMER}", *TINY_TRAINING,
                    "SOLVER.MAX_ITER", 2, "MODEL.WEIGHTS", s1 / "model_final.pth",
                    "MODEL.LONG_TAIL.DISALIGN.ENABLED", "True", "MODEL.LONG_TAIL.GRW.ENABLED", "True",
                    "OUTPUT_DIR", s2, datasets_root=datasets_root)
    assert "sem_seg_head.long_tail.calibration" in proc.stdout + proc.stderr
    before = torch.load(s1 / "model_final.pth", map_location="cpu")["model"]
    after = torch.load(s2 / "model_final.pth", map_location="cpu")["model"]
    changed = {k for k in after if k in before and not torch.equal(before[k], after[k])}
    assert not changed, f"stage 2 changed stage-1 tensors: {sorted(changed)[:3]}"
    assert any(".calibration." in k and k not in before for k in after)


# ---------------------------------------------------------------------------- published weights

def test_nvlabs_weights_convert_and_load_through_model_weights(datasets_root, tmp_path, capsys):
    """A file in the NVlabs release's format, converted by the tool, is loaded by MODEL.WEIGHTS:
    every encoder tensor arrives, the ImageNet head is dropped."""
    published = nvlabs_file()
    torch.save(published, tmp_path / "mit_tiny.pth")
    assert convert_tool().main([str(tmp_path / "mit_tiny.pth"), str(tmp_path / "converted.pth")]) == 0
    out = capsys.readouterr().out
    assert "nvlabs format" in out and "custom shape" in out
    cfg = tiny_cfg(SEGFORMER, tmp_path, *TINY_MIT_OPTS, "MODEL.WEIGHTS", tmp_path / "converted.pth")
    from longtailseg.engine import build_model as build_with_weights

    model = build_with_weights(cfg, weights="pretrained")
    loaded = model.backbone.mit.state_dict()
    assert set(loaded) == {k for k in published if not k.startswith("head.")}
    for k, v in loaded.items():
        assert torch.equal(v, published[k]), k


def test_the_variant_of_a_published_file_is_named(tmp_path, capsys):
    arch = MIT_VARIANTS["mit_b0"]
    published = nvlabs_file(embed_dims=arch["embed_dims"], depths=arch["depths"], num_heads=(1, 2, 5, 8))
    assert check_mit_weights(convert_mit_state_dict(published)) == "mit_b0"
    # A whole NVlabs SegFormer (encoder under backbone., its decode head) gives the same encoder.
    segmentor = {"state_dict": {**{"backbone." + k: v for k, v in published.items() if not k.startswith("head.")},
                                "decode_head.linear_pred.weight": torch.zeros(150, 256, 1, 1)}}
    assert convert_mit_state_dict(segmentor).keys() == convert_mit_state_dict(published).keys()
    torch.save({"state_dict": published}, tmp_path / "mit_b0.pth")  # mmcv's container
    tool = convert_tool()
    assert tool.main([str(tmp_path / "mit_b0.pth"), str(tmp_path / "out.pth")]) == 0
    assert "MODEL.MIT.VARIANT mit_b0" in capsys.readouterr().out
    del published["block3.1.mlp.fc2.bias"]
    torch.save(published, tmp_path / "cut.pth")
    assert tool.main([str(tmp_path / "cut.pth"), str(tmp_path / "cut_out.pth")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "block3.1.mlp.fc2.bias" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "cut_out.pth").exists()


# The published Hugging Face files (nvidia/mit-b*) use transformers 4's names; transformers 5
# renames them when loading. This table states the published names independently of our converter.
HF_V5_TO_V4 = [
    (r"stages\.(\d+)\.patch_embeddings\.", r"encoder.patch_embeddings.\1."),
    (r"stages\.(\d+)\.blocks\.", r"encoder.block.\1."),
    (r"stages\.(\d+)\.layer_norm\.", r"encoder.layer_norm.\1."),
    (r"attention\.q_proj\.", "attention.self.query."), (r"attention\.k_proj\.", "attention.self.key."),
    (r"attention\.v_proj\.", "attention.self.value."),
    (r"attention\.sequence_reduction\.sequence_reduction\.", "attention.self.sr."),
    (r"attention\.sequence_reduction\.layer_norm\.", "attention.self.layer_norm."),
    (r"attention\.o_proj\.", "attention.output.dense."), (r"mlp\.fc1\.", "mlp.dense1."),
    (r"mlp\.fc2\.", "mlp.dense2."), (r"layernorm_before\.", "layer_norm_1."), (r"layernorm_after\.", "layer_norm_2."),
]


def test_huggingface_weights_give_the_outputs_of_transformers_segformer(tmp_path, capsys):
    """nvidia/mit-b* in transformers 4's (published) and 5's names: converted, our MiT computes
    what transformers' SegformerModel computes with the same tensors."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        depths=list(TINY_MIT["depths"]), hidden_sizes=list(TINY_MIT["embed_dims"]),
        num_attention_heads=list(TINY_MIT["num_heads"]), num_labels=10)
    reference = transformers.SegformerForImageClassification(config).eval()
    v5 = reference.state_dict()
    v4 = {}
    for key, value in v5.items():
        for pattern, replacement in HF_V5_TO_V4:
            key = re.sub(pattern, replacement, key)
        v4[key] = value
    assert "segformer.encoder.block.2.0.attention.self.key.weight" in v4
    # transformers itself reads the transformers-4 names as its legacy (published) format.
    from safetensors.torch import save_file

    folder = tmp_path / "mit-tiny"
    config.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in v4.items()}, str(folder / "model.safetensors"))
    reloaded = transformers.SegformerForImageClassification.from_pretrained(folder).state_dict()
    assert all(torch.equal(reloaded[k], v5[k]) for k in v5)
    # The tool reads the published .safetensors file.
    assert convert_tool().main([str(folder / "model.safetensors"), str(tmp_path / "converted.pth")]) == 0
    assert "huggingface format" in capsys.readouterr().out
    converted = torch.load(tmp_path / "converted.pth")["model"]
    assert set(converted) == {"backbone.mit." + k for k in convert_mit_state_dict(v4)}

    backbone = MiTBackbone(3, **TINY_MIT, drop_path_rate=0.0).eval()
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = reference.segformer(image, output_hidden_states=True).hidden_states
    for state in (v4, v5):
        assert detect_mit_weight_format(state) == "huggingface"
        backbone.mit.load_state_dict(convert_mit_state_dict(state), strict=True)
        with torch.no_grad():
            ours = backbone(image)
        for name, hf in zip(("res2", "res3", "res4", "res5"), expected):
            torch.testing.assert_close(ours[name], hf, rtol=1e-4, atol=1e-4)


def mmseg_names(nvlabs):
    """The NVlabs tensors in mmsegmentation 1.x's MiT layout (layers.{stage}.{0 patch embedding,
    1 blocks, 2 norm}; nn.MultiheadAttention's packed in_proj; Mix-FFN as 1x1 convolutions)."""
    out = {}
    for key, value in nvlabs.items():
        if key.startswith("head."):
            continue
        stage = int(re.match(r"\D+(\d)", key).group(1)) - 1
        if key.startswith("patch_embed"):
            out[f"layers.{stage}.0." + key.split(".", 1)[1].replace("proj.", "projection.")] = value
        elif key.startswith("norm"):
            out[f"layers.{stage}.2." + key.split(".", 1)[1]] = value
        else:
            _, block, rest = key.split(".", 2)
            prefix = f"layers.{stage}.1.{block}."
            if rest.startswith("attn.q."):
                kind = rest.split(".")[-1]
                out[prefix + "attn.attn.in_proj_" + kind] = torch.cat([value, nvlabs[key.replace(".q.", ".kv.")]])
            elif rest.startswith("attn.kv."):
                continue
            elif rest.startswith("attn.proj."):
                out[prefix + "attn.attn.out_proj." + rest.split(".")[-1]] = value
            elif rest.startswith("mlp."):
                layer = {"fc1": "0", "dwconv": "1", "fc2": "4"}[rest.split(".")[1]]
                if layer != "1" and value.dim() == 2:
                    value = value[:, :, None, None]
                out[prefix + f"ffn.layers.{layer}." + rest.split(".")[-1]] = value
            else:
                out[prefix + rest] = value
    return out


def test_mmseg_weights_round_trip():
    published = nvlabs_file()
    mmseg = {"state_dict": {"backbone." + k: v for k, v in mmseg_names(published).items()}}
    assert detect_mit_weight_format(checkpoint_tensors(mmseg)) == "mmseg"
    converted = convert_mit_state_dict(mmseg)
    expected = {k: v for k, v in published.items() if not k.startswith("head.")}
    assert set(converted) == set(expected)
    for k, v in expected.items():
        assert torch.equal(converted[k], v), k


def test_medoe_on_segformer_stage1_then_moe_on_the_frozen_mit(datasets_root, tmp_path):
    """SegFormer heads as MEDOE's experts; stage 2 from the stage-1 weights trains only the
    decision-maker with AdamW, the MiT frozen with its stochastic depth off (as at test time)."""
    from longtailseg.engine import Trainer
    from longtailseg.engine import build_model as build_with_weights

    medoe = ["MODEL.SEM_SEG_HEAD.NAME", "MEDOEHead", "MODEL.MEDOE.EXPERT_HEAD", "LongTailSegFormerHead",
             "MODEL.MEDOE.EXPERT_CHANNELS", 16]
    torch.manual_seed(0)
    stage1 = build_model(tiny_cfg(SEGFORMER, tmp_path, *medoe))
    assert [e.fuse.out_channels for e in stage1.sem_seg_head.experts] == [64, 16, 16]
    stage1.train()
    losses = stage1(random_batch())
    assert {f"loss_sem_seg_expert{k}" for k in (1, 2, 3)} <= set(losses)
    DetectionCheckpointer(stage1, str(tmp_path)).save("stage1")

    cfg = tiny_cfg(SEGFORMER, tmp_path / "moe", *medoe, "MODEL.MEDOE.ENSEMBLE", "MOE",
                   "MODEL.WEIGHTS", tmp_path / "stage1.pth", "SOLVER.WARMUP_ITERS", 0)
    model = build_with_weights(cfg, weights="stage1")
    assert not any("DropPath" in type(m).__name__ for m in model.backbone.modules())
    optimizer = Trainer.build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == \
           {id(p) for p in model.sem_seg_head.decision_maker.parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for seed in range(2):
        loss = sum(model(random_batch(seed=seed)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("sem_seg_head.decision_maker.") for k in changed), changed


def test_missing_imagenet_weights_are_named_before_any_work(tmp_path):
    from longtailseg import model_zoo
    from longtailseg.engine.weights import check_local_weights, ensure_weights_available

    cfg = model_zoo.get_config("ade20k/segformer_mit_b3.yaml")
    cfg.MODEL.WEIGHTS = str(tmp_path / "pretrained" / "mit_b3.pth")
    with pytest.raises(ConfigError, match=re.escape(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} does not exist")) as e:
        check_local_weights(cfg)
    assert "tools/convert_mit_weights.py" in str(e.value) and len(str(e.value).splitlines()) == 1
    (tmp_path / "pretrained").mkdir()
    torch.save(mit_weights_for_detectron2(nvlabs_file()), cfg.MODEL.WEIGHTS)
    check_local_weights(cfg)  # the file exists: accepted
    assert ensure_weights_available(cfg) is None  # a local file: nothing to download


def test_fused_attention_computes_smps_attention():
    from segmentation_models_pytorch.encoders.mix_transformer import Attention

    torch.manual_seed(0)
    backbone = MiTBackbone(3, **TINY_MIT, drop_path_rate=0.0).eval()
    assert all(type(m).__name__ == "EfficientAttention" for m in backbone.modules() if isinstance(m, Attention))
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fused = backbone(image)
        for m in backbone.modules():
            if isinstance(m, Attention):
                m.__class__ = Attention  # smp's explicit softmax(q k^T) v
        explicit = backbone(image)
    for name in fused:
        torch.testing.assert_close(fused[name], explicit[name], rtol=1e-5, atol=1e-5)
