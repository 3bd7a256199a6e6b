"""FCN, PSPNet and OCRNet heads: tiny models built from the synthetic configs."""
import pytest
import torch

from conftest import random_batch, tiny_cfg

from detectron2.modeling import build_model

HEADS = {
    "fcn": "LongTailFCNHead",
    "pspnet": "LongTailPSPHead",
    "ocrnet": "LongTailOCRHead",
}


def _cfg(name, output_dir, *opts):
    return tiny_cfg(f"synthetic/{name}.yaml", output_dir, *opts)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_trains_one_step_and_predicts_at_input_size(name, datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg(name, tmp_path))
    assert type(model.sem_seg_head).__name__ == HEADS[name]
    model.train()
    losses = model(random_batch())
    expected = {"loss_sem_seg", "loss_sem_seg_aux"} if name == "ocrnet" else {"loss_sem_seg"}
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(p.grad is not None for n, p in model.sem_seg_head.named_parameters()
               if "calibration" not in n), "every head parameter takes part in the loss"

    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}])
    assert out[0]["sem_seg"].shape == (19, 40, 56)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_disalign_is_identity_at_init(name, datasets_root, tmp_path):
    torch.manual_seed(0)
    plain = build_model(_cfg(name, tmp_path))
    calibrated = build_model(_cfg(name, tmp_path, "MODEL.LONG_TAIL.DISALIGN.ENABLED", "True"))
    assert plain.sem_seg_head.long_tail.calibration is None
    assert calibrated.sem_seg_head.long_tail.calibration is not None
    missing, unexpected = calibrated.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(".calibration." in k for k in missing) and not unexpected
    plain.eval(), calibrated.eval()
    batch = [{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}]
    with torch.no_grad():
        a, b = plain(batch)[0]["sem_seg"], calibrated(batch)[0]["sem_seg"]
    assert torch.allclose(a, b, atol=1e-6)
    assert a.std() > 0  # not a degenerate comparison


@pytest.mark.parametrize("name", sorted(HEADS))
def test_blv_trains(name, datasets_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg(name, tmp_path, "MODEL.LONG_TAIL.BLV.ENABLED", "True"))
    assert model.sem_seg_head.long_tail.variation is not None
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = sum(model(random_batch()).values())
    assert torch.isfinite(loss)
    optimizer.zero_grad(), loss.backward(), optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_ocr_aux_loss_is_plain_weighted_cross_entropy(datasets_root, tmp_path):
    """BLV acts on the main logits only: the auxiliary loss is the same with and without it."""
    torch.manual_seed(0)
    plain = build_model(_cfg("ocrnet", tmp_path, "MODEL.SEM_SEG_HEAD.OCR_AUX_LOSS_WEIGHT", "0.2"))
    blv = build_model(_cfg("ocrnet", tmp_path, "MODEL.SEM_SEG_HEAD.OCR_AUX_LOSS_WEIGHT", "0.2",
                           "MODEL.LONG_TAIL.BLV.ENABLED", "True"))
    blv.load_state_dict(plain.state_dict())
    for m in (plain, blv):  # train mode (losses) without dropout's randomness
        m.train()
        for module in m.modules():
            if isinstance(module, torch.nn.Dropout2d):
                module.eval()
    batch = random_batch(seed=3)
    a, b = plain(batch), blv(batch)
    assert torch.allclose(a["loss_sem_seg_aux"], b["loss_sem_seg_aux"])
    assert not torch.allclose(a["loss_sem_seg"], b["loss_sem_seg"])
    # With weight 0.2 and a near-uniform auxiliary classifier at init: 0.2 * log(19)
    assert a["loss_sem_seg_aux"].item() == pytest.approx(0.2 * torch.log(torch.tensor(19.0)).item(),
                                                         rel=0.05)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_trains_and_evaluates_on_the_synthetic_set_through_train_net(name, datasets_root, tmp_path):
    import json

    from conftest import TINY_TRAINING, run_tool

    run_tool("train_net.py", "--config-file", f"configs/synthetic/{name}.yaml", *TINY_TRAINING,
             "SOLVER.MAX_ITER", 3, "OUTPUT_DIR", tmp_path, datasets_root=datasets_root)
    assert (tmp_path / "model_final.pth").is_file()
    results = json.loads((tmp_path / "inference/synthetic_ade_sem_seg_val/sem_seg_results.json").read_text())
    assert results["class_names"] and 0 <= results["sem_seg"]["mACC-head"] <= 100
    assert 0 <= results["sem_seg"]["DiceErr"] <= 1


@pytest.mark.parametrize("name", sorted(HEADS))
def test_disalign_confidence_reads_the_feature_before_dropout(name, datasets_root, tmp_path):
    torch.manual_seed(0)
    head = build_model(_cfg(name, tmp_path, "MODEL.LONG_TAIL.DISALIGN.ENABLED", "True")).sem_seg_head
    head.train()
    seen = []
    head.long_tail.calibration.confidence.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    feature = torch.rand(2, head.predictor.in_channels, 4, 4) + 0.5
    head.classify(feature)
    assert torch.equal(seen[0], feature)  # dropout (training mode) did not touch it


@pytest.mark.parametrize("name", sorted(HEADS))
def test_stage2_switches_dropout_off_in_the_frozen_model(name, datasets_root, tmp_path):
    from longtailseg.engine.stage2 import prepare_stage2_model
    from torch.nn.modules.dropout import _DropoutNd

    torch.manual_seed(0)
    plain = build_model(_cfg(name, tmp_path))
    assert any(isinstance(m, _DropoutNd) for m in plain.modules())
    model = prepare_stage2_model(build_model(_cfg(name, tmp_path, "MODEL.LONG_TAIL.DISALIGN.ENABLED", "True")))
    assert not any(isinstance(m, _DropoutNd) for m in model.modules())
    model.train()
    feature = torch.rand(2, model.sem_seg_head.predictor.in_channels, 4, 4)
    with torch.no_grad():  # training mode, yet the same input gives the same logits
        assert torch.equal(model.sem_seg_head.classify(feature), model.sem_seg_head.classify(feature))
