"""Every method trains a few steps with finite losses at the profiles' class counts: 150 classes
(ADE20K profile: CE, BLV, DisAlign stage 2, PAT, MEDOE stage 1 and MOE) and 1203 categories
(LVIS v1 profile: the ROI-head baseline, cosine, BLV, DisAlign stage 2), each model built from its
profile config and class statistics counted on a tiny generated profile set."""
import longtailseg  # noqa: F401  (registers the LongTailSeg components)

import pytest
import torch

from conftest import instance_batch, random_batch, tiny_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from longtailseg.data import register_synthetic_datasets
from longtailseg.data.synthetic.generator import generate_profile
from longtailseg.engine.stage2 import is_stage2, prepare_stage2_model

ADE = "synthetic/ade20k_profile/"
LVIS = "synthetic/lvis_v1_profile/"
STEPS = 2


@pytest.fixture(scope="module")
def profile_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    generate_profile(str(root / "ade"), "ade20k", num_train=40, num_val=32, size=32, progress=False)
    generate_profile(str(root / "lvis"), "lvis_v1", num_train=344, num_val=344, size=32,
                     progress=False)
    register_synthetic_datasets(str(root / "ade"), profile="ade20k")
    register_synthetic_datasets(str(root / "lvis"), profile="lvis_v1")
    return root


def _train_steps(cfg, batches):
    """Build the model as tools/train_net.py does (stage 2 frozen but its trainable part), run
    SGD steps and return every step's losses."""
    torch.manual_seed(0)
    model = build_model(cfg)
    if is_stage2(cfg):
        model = prepare_stage2_model(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3)
    history = []
    with EventStorage(0):
        for batch in batches:
            losses = model(batch)
            history.append({k: float(v.detach()) for k, v in losses.items()})
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    return history


def _assert_finite(history):
    assert len(history) == STEPS
    for losses in history:
        assert losses, "the model returned no loss"
        bad = {k: v for k, v in losses.items() if not torch.isfinite(torch.tensor(v))}
        assert not bad, f"non-finite losses: {bad}"


@pytest.mark.parametrize("config", ["deeplab_v3_plus", "blv_deeplab", "disalign_deeplab",
                                    "pat_deeplab", "medoe_deeplab", "medoe_deeplab_moe"])
def test_every_semantic_method_trains_at_150_classes(config, profile_sets, tmp_path):
    cfg = tiny_cfg(ADE + config + ".yaml", tmp_path, "MODEL.WEIGHTS", "")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 150
    batches = [random_batch(seed=s, num_classes=150) for s in range(STEPS)]
    history = _train_steps(cfg, batches)
    _assert_finite(history)
    if config.startswith("medoe_deeplab") and config != "medoe_deeplab_moe":
        assert {f"loss_sem_seg_expert{k}" for k in (1, 2, 3)} <= set(history[0])


@pytest.mark.parametrize("config,opts", [
    ("mask_rcnn_baseline", []),
    ("mask_rcnn_cosine", []),
    ("mask_rcnn_baseline", ["MODEL.LONG_TAIL.BLV.ENABLED", "True"]),
    ("mask_rcnn_disalign", []),
], ids=["baseline", "cosine", "blv", "disalign"])
def test_every_roi_head_method_trains_at_1203_categories(config, opts, profile_sets, tmp_path):
    cfg = tiny_cfg(LVIS + config + ".yaml", tmp_path, "MODEL.WEIGHTS", "", *opts)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1203
    batches = [instance_batch(seed=s, num_classes=1203) for s in range(STEPS)]
    history = _train_steps(cfg, batches)
    _assert_finite(history)
    assert history[0]["loss_cls"] > 0
