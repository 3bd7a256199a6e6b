"""MEDOE's Table 5 comparisons: MCN (one context module, K classifiers) and ME (separately
trained networks, softmax averaged), on the tiny synthetic set (issue 22)."""
import json

import torch
import torch.nn.functional as F

from conftest import TINY_TRAINING, random_batch, run_tool, tiny_cfg

from detectron2.modeling import build_model

from longtailseg.engine import build_model as build_checked_model
from longtailseg.errors import ConfigError

MCN = "synthetic/mcn_deeplab.yaml"
ME = "synthetic/me_deeplab.yaml"


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())


def test_mcn_shares_one_context_module_among_its_classifiers(datasets_root, tmp_path):
    torch.manual_seed(0)
    mcn = build_model(tiny_cfg(MCN, tmp_path / "mcn"))
    baseline = build_model(tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path / "ce"))
    head = mcn.sem_seg_head
    assert len(head.experts) == 1 and len(head.classifiers) == 2 and head.num_experts == 3
    # The CE model plus two 1x1 classifiers (64 channels -> 19 classes).
    assert parameter_count(mcn) == parameter_count(baseline) + 2 * (64 * 19 + 19)
    stats = json.loads((tmp_path / "mcn" / "class_stats.json").read_text())["groups"]
    owned = [sorted(torch.nonzero(m).flatten().tolist()) for m in head.expert_masks]
    assert owned == [list(range(19)), sorted(stats["body"] + stats["tail"]), sorted(stats["tail"])]

    mcn.train()
    losses = mcn(random_batch(seed=1))
    assert {f"loss_sem_seg_expert{k}" for k in (1, 2, 3)} <= set(losses)
    # Unlike MEDOE's experts 2..K, classifier 3 trains the shared context module and the backbone.
    losses["loss_sem_seg_expert3"].backward()
    decoder_grads = [p.grad for n, p in head.experts[0].named_parameters() if "predictor" not in n]
    assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mcn.backbone.parameters())
    assert head.experts[0].predictor.weight.grad is None  # expert 1's own classifier: not in that loss

    mcn.eval()
    with torch.no_grad():
        probs = mcn([{"image": torch.rand(3, 32, 32) * 255, "height": 32, "width": 32}])[0]["sem_seg"]
    assert probs.shape == (19, 32, 32) and torch.allclose(probs.sum(0), torch.ones(32, 32), atol=1e-5)


def _member_checkpoint(cfg, path, seed):
    """A member's model_final.pth in Detectron2's format, from random weights."""
    torch.manual_seed(seed)
    torch.save({"model": build_model(cfg).state_dict(), "iteration": 0}, path)
    return str(path)


def test_model_ensemble_averages_the_members_softmax(datasets_root, tmp_path):
    member_cfg = tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path / "member")
    weights = [_member_checkpoint(member_cfg, tmp_path / f"member{s}.pth", s) for s in (1, 2)]
    cfg = tiny_cfg(ME, tmp_path / "me", "MODEL.MODEL_ENSEMBLE.MEMBER_WEIGHTS", weights)
    ensemble = build_checked_model(cfg).eval()
    assert len(ensemble.members) == 2
    inputs = [{"image": torch.rand(3, 32, 48) * 255, "height": 32, "width": 48}]
    with torch.no_grad():
        averaged = ensemble(inputs)[0]["sem_seg"]
        singles = []
        for path in weights:
            one = member_cfg.clone()
            one.defrost()
            one.MODEL.WEIGHTS = path
            singles.append(F.softmax(build_checked_model(one).eval()(inputs)[0]["sem_seg"], dim=0))
    assert averaged.shape == (19, 32, 48)
    assert torch.allclose(averaged, (singles[0] + singles[1]) / 2, atol=1e-6)
    assert not torch.allclose(singles[0], singles[1], atol=1e-3)  # two different networks

    # A checkpoint of another network is refused in one line naming the file.
    fcn = _member_checkpoint(tiny_cfg("synthetic/fcn.yaml", tmp_path / "fcn"), tmp_path / "fcn.pth", 3)
    bad = tiny_cfg(ME, tmp_path / "bad", "MODEL.MODEL_ENSEMBLE.MEMBER_WEIGHTS", [weights[0], fcn])
    try:
        build_checked_model(bad)
        raise AssertionError("an FCN checkpoint was accepted as a DeepLabV3+ member")
    except ConfigError as e:
        assert "fcn.pth does not fit" in str(e) and "\n" not in str(e)


def test_model_ensemble_evaluates_with_train_net_and_refuses_training(trained_baseline, datasets_root, tmp_path):
    member = str(trained_baseline / "model_final.pth")
    second = _member_checkpoint(tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path / "m"), tmp_path / "m2.pth", 2)
    opts = [*TINY_TRAINING, "MODEL.MODEL_ENSEMBLE.MEMBER_WEIGHTS", f"['{member}', '{second}']"]
    out = tmp_path / "eval"
    run_tool("train_net.py", "--config-file", f"configs/{ME}", "--eval-only", *opts, "OUTPUT_DIR", out,
             datasets_root=datasets_root)
    (results,) = out.glob("inference/*/sem_seg_results.json")
    metrics = json.loads(results.read_text())["sem_seg"]
    assert 0 <= metrics["mIoU"] <= 100 and "Pearson-ACC-frequency" in metrics

    proc = run_tool("train_net.py", "--config-file", f"configs/{ME}", *opts, "OUTPUT_DIR", tmp_path / "train",
                    datasets_root=datasets_root, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "--eval-only" in proc.stderr.strip().splitlines()[-1]
