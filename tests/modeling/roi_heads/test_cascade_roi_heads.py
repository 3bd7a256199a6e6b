"""LongTailCascadeROIHeads: Detectron2's Cascade R-CNN with the long-tail box predictor at every
stage. With default keys it is Detectron2's CascadeROIHeads; every stage takes the cosine
classifier, BLV, GRW, DisAlign and the sigmoid losses; DisAlign's stage 2 trains every stage's
calibration and nothing else; test-time scores are the mean of the stages' (calibrated,
NorCal-ed) probabilities. Also the one-line refusals of meaningless scoring combinations."""
import os

import pytest
import torch

from conftest import REPO, instance_batch, tiny_cfg
from longtailseg.engine import load_config
from longtailseg.engine.stage2 import prepare_stage2_model
from longtailseg.errors import ConfigError
from longtailseg.longtail.cosine import CosineClassifier
from longtailseg.longtail.losses import EqualizationLossV2, SigmoidCrossEntropyLoss
from longtailseg.modeling.extension_points import check_model_config
from longtailseg.modeling.roi_heads import LongTailCascadeROIHeads, LongTailFastRCNNOutputLayers

from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import cascade_rcnn
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

CASCADE = "synthetic/cascade_mask_rcnn_baseline.yaml"
DISALIGN = ["MODEL.LONG_TAIL.DISALIGN.ENABLED", "True"]
STAGES = range(3)


def _cfg(output_dir, *opts):
    return tiny_cfg(CASCADE, output_dir, *opts)


def _step(model, seed=3):
    model.train()
    with EventStorage(0):
        return model(instance_batch(seed=seed))


def test_with_default_keys_it_is_detectron2s_cascade(tmp_path):
    """Same parameters (Detectron2's weights load strictly), same losses in a training step,
    same detections as Detectron2's own CascadeROIHeads built from the same config."""
    results, initial = [], None
    for name in ("CascadeROIHeads", "LongTailCascadeROIHeads"):
        torch.manual_seed(0)
        model = build_model(_cfg(tmp_path, "MODEL.ROI_HEADS.NAME", name, "TEST.DETECTIONS_PER_IMAGE", 20))
        if initial is None:
            initial = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            model.load_state_dict(initial)
        torch.manual_seed(1)
        losses = _step(model)
        model.eval()
        with torch.no_grad():
            detections = model(instance_batch(seed=4))[0]["instances"]
        results.append(({k: v.clone() for k, v in model.state_dict().items()}, losses, detections))
    (weights, losses, detections), (weights_lt, losses_lt, detections_lt) = results
    assert isinstance(model.roi_heads, LongTailCascadeROIHeads)
    assert weights.keys() == weights_lt.keys()
    assert {f"loss_cls_stage{k}" for k in STAGES} | {"loss_mask"} <= set(losses)
    assert losses.keys() == losses_lt.keys()
    # CE's mean is taken as sum / count here: equal up to float rounding.
    assert all(torch.allclose(losses[k], losses_lt[k], rtol=1e-6, atol=0) for k in losses), {
        k: (losses[k].item(), losses_lt[k].item()) for k in losses}
    assert len(detections) > 0
    assert torch.equal(detections.scores, detections_lt.scores)
    assert torch.equal(detections.pred_boxes.tensor, detections_lt.pred_boxes.tensor)


def test_every_stage_has_its_own_long_tail_predictor(datasets_root, tmp_path):
    model = build_model(_cfg(tmp_path, "MODEL.ROI_BOX_HEAD.COSINE.ENABLED", True, "MODEL.LONG_TAIL.BLV.ENABLED",
                             True, "MODEL.LONG_TAIL.GRW.ENABLED", True, *DISALIGN,
                             "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", True, "MODEL.ROI_BOX_HEAD.USE_FED_LOSS", True,
                             "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES", 8))
    predictors = model.roi_heads.box_predictor
    assert len(predictors) == 3
    assert len({id(p.long_tail) for p in predictors}) == 3
    weights = model.roi_heads.box_predictor[0].box2box_transform.weights
    assert [p.box2box_transform.weights for p in predictors][1:] == [(20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]
    assert weights == (10.0, 10.0, 5.0, 5.0)
    for p in predictors:
        assert isinstance(p, LongTailFastRCNNOutputLayers) and isinstance(p.cls_score, CosineClassifier)
        lt = p.long_tail
        assert lt.calibration is not None and lt.variation is not None and lt.class_weights is not None
        assert isinstance(lt.loss_fn, SigmoidCrossEntropyLoss) and lt.loss_fn.fed_class_weights is not None
    losses = _step(model)
    assert {f"loss_cls_stage{k}" for k in STAGES} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


def test_eqlv2_keeps_one_gradient_statistic_per_stage(datasets_root, tmp_path):
    model = build_model(_cfg(tmp_path, "MODEL.LONG_TAIL.LOSS.NAME", "EQLv2"))
    _step(model)
    losses = [p.long_tail.loss_fn for p in model.roi_heads.box_predictor]
    assert all(isinstance(loss, EqualizationLossV2) for loss in losses)
    assert all(loss.negative_gradients.shape == (19,) and loss.negative_gradients.sum() > 0 for loss in losses)
    assert not torch.equal(losses[0].negative_gradients, losses[2].negative_gradients)
    keys = model.state_dict().keys()
    assert "roi_heads.box_predictor.2.long_tail.loss_fn.positive_gradients" in keys  # resumed exactly


def test_stage2_trains_every_stages_calibration_and_nothing_else(datasets_root, tmp_path):
    torch.manual_seed(0)
    model = prepare_stage2_model(build_model(_cfg(tmp_path, *DISALIGN, "MODEL.LONG_TAIL.GRW.ENABLED", True)))
    calibration = {f"roi_heads.box_predictor.{k}.long_tail.calibration.{name}"
                   for k in STAGES for name in ("alpha", "beta", "confidence.weight", "confidence.bias")}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == calibration
    mask_calls = []
    model.roi_heads.mask_head.register_forward_hook(lambda *_: mask_calls.append(1))
    losses = _step(model)
    # Every stage's box deltas are computed (they make the next stage's boxes), their loss is not.
    assert set(losses) == {f"loss_cls_stage{k}" for k in STAGES} and not mask_calls
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    for step in range(3):
        loss = sum(_step(model, seed=20 + step).values())
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= calibration, changed - calibration
    for k in STAGES:
        assert f"roi_heads.box_predictor.{k}.long_tail.calibration.beta" in changed
    assert any("running_mean" in k for k in before)


def test_scores_are_the_mean_of_the_stages_calibrated_probabilities(datasets_root, tmp_path, monkeypatch):
    """Detectron2's rule, kept: the boxes' scores are the mean over stages of each stage's
    probabilities, here after each stage's DisAlign calibration and NorCal."""
    torch.manual_seed(0)
    model = build_model(_cfg(tmp_path, *DISALIGN, "MODEL.ROI_BOX_HEAD.NORCAL.ENABLED", True))
    with torch.no_grad():
        for k, predictor in enumerate(model.roi_heads.box_predictor):
            predictor.long_tail.calibration.beta.normal_(std=1.0 + k)
            predictor.long_tail.calibration.alpha.uniform_(0.5, 1.5)
    stage_probs, combined = [], []
    for predictor in model.roi_heads.box_predictor:
        real = predictor.predict_probs
        predictor.predict_probs = lambda p, q, real=real: stage_probs.append(real(p, q)) or stage_probs[-1]
    real_inference = cascade_rcnn.fast_rcnn_inference
    monkeypatch.setattr(cascade_rcnn, "fast_rcnn_inference",
                        lambda boxes, scores, *a: combined.append(scores) or real_inference(boxes, scores, *a))
    model.eval()
    batch = instance_batch(n=1, seed=5)
    proposals = Instances((32, 32), proposal_boxes=Boxes(batch[0]["instances"].gt_boxes.tensor.clone()),
                          objectness_logits=torch.zeros(3))
    features = model.backbone(model.preprocess_image(batch).tensor)
    with torch.no_grad():
        model.roi_heads(None, features, [proposals])
    assert len(stage_probs) == 3 and len(combined) == 1
    mean = sum(probs[0] for probs in stage_probs) / 3
    assert torch.allclose(combined[0][0], mean)
    assert torch.allclose(mean.sum(1), torch.ones(3))  # NorCal renormalised every stage
    # Each stage's probabilities are its calibrated, NorCal-ed logits'.
    predictor = model.roi_heads.box_predictor[2]
    calibrated = stage_probs[2][0]
    uncalibrated = predictor.long_tail.probabilities(torch.zeros_like(calibrated))
    assert not torch.allclose(calibrated, uncalibrated)


@pytest.mark.parametrize("opts, keys", [
    (["MODEL.ROI_BOX_HEAD.USE_FED_LOSS", True], ["USE_FED_LOSS", "USE_SIGMOID_CE"]),
    (["MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", True, "MODEL.LONG_TAIL.LOSS.NAME", "LA"], ["USE_SIGMOID_CE", "LA"]),
    (["MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", True, "MODEL.ROI_BOX_HEAD.NORCAL.ENABLED", True], ["NORCAL"]),
    (["MODEL.LONG_TAIL.LOSS.NAME", "EQLv2", "MODEL.ROI_BOX_HEAD.NORCAL.ENABLED", True], ["NORCAL", "EQLv2"]),
])
@pytest.mark.parametrize("config", [CASCADE, "synthetic/mask_rcnn_baseline.yaml"])
def test_meaningless_scoring_combinations_are_refused_in_one_line(config, opts, keys, tmp_path):
    cfg = load_config(os.path.join(REPO, "configs", config), [str(o) for o in opts], freeze=False)
    with pytest.raises(ConfigError) as error:
        check_model_config(cfg)
    message = str(error.value)
    assert "\n" not in message and all(key in message for key in keys), message


def test_eqlv2_is_refused_for_semantic_segmentation():
    cfg = load_config(os.path.join(REPO, "configs/synthetic/deeplab_v3_plus.yaml"),
                      ["MODEL.LONG_TAIL.LOSS.NAME", "EQLv2"], freeze=False)
    with pytest.raises(ConfigError, match="EQLv2 is a loss of the K . 1-way box classifier"):
        check_model_config(cfg)
