"""The sigmoid losses of the K + 1-way box classifier and NorCal, against their equations:
sigmoid CE and the federated loss against Detectron2 main's own functions on the same inputs
(its vendored source), EQLv2 against Tan et al. 2021's eqs. 5-7 with the gradients taken by
autograd, NorCal against Pan et al. 2021's logit form."""
import functools
import math
import types
from typing import List, Union

import pytest
import torch
import torch.nn.functional as F

from longtailseg.longtail.calibration import normalised_calibration
from longtailseg.longtail.losses import EqualizationLossV2, SigmoidCrossEntropyLoss, build_loss, federated_classes

import detectron2_main_source

K = 19


def _main_fast_rcnn(use_fed_loss, fed_loss_num_classes, weights):
    """Detectron2 main's FastRCNNOutputLayers.sigmoid_cross_entropy_loss and
    get_fed_loss_classes, bound to an object with the attributes they read."""
    fns = detectron2_main_source.functions(
        "detectron2/modeling/roi_heads/fast_rcnn.py",
        ["get_fed_loss_classes", "sigmoid_cross_entropy_loss"], {"torch": torch, "F": F},
        in_class="FastRCNNOutputLayers")
    layer = types.SimpleNamespace(use_fed_loss=use_fed_loss, fed_loss_num_classes=fed_loss_num_classes,
                                  fed_loss_cls_weights=weights)
    layer.get_fed_loss_classes = functools.partial(fns["get_fed_loss_classes"], layer)
    return functools.partial(fns["sigmoid_cross_entropy_loss"], layer), layer.get_fed_loss_classes


def _boxes(n=40, seed=0, classes=(0, 3, 7, 18)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K + 1, generator=g, dtype=torch.float64)
    labels = torch.tensor(classes)[torch.randint(0, len(classes), (n,), generator=g)]
    labels[: n // 2] = K  # half background, as the sampler's positive fraction
    return logits, labels


def test_sigmoid_ce_matches_detectron2_main():
    main_loss, _ = _main_fast_rcnn(False, 50, None)
    logits, labels = _boxes()
    ours = SigmoidCrossEntropyLoss()
    assert ours(logits, labels).item() == pytest.approx(main_loss(logits, labels).item(), rel=1e-12)
    assert ours(logits[:0], labels[:0]).item() == 0.0 == main_loss(logits[:0], labels[:0]).item()


@pytest.mark.parametrize("num_fed_classes", [6, 3])  # draws negatives / only the 4 present
def test_federated_loss_and_classes_match_detectron2_main(num_fed_classes):
    image_counts = torch.arange(1, K + 1, dtype=torch.float32) * 3
    weights = image_counts ** 0.5
    main_loss, main_classes = _main_fast_rcnn(True, num_fed_classes, weights)
    ours = SigmoidCrossEntropyLoss(fed_class_weights=weights, fed_num_classes=num_fed_classes)
    for seed in range(5):
        logits, labels = _boxes(seed=seed)
        torch.manual_seed(seed)
        expected_classes = main_classes(labels, num_fed_classes, K, weights)
        torch.manual_seed(seed)
        assert torch.equal(federated_classes(labels, K, num_fed_classes, weights), expected_classes)
        ours_z = logits.clone().requires_grad_(True)
        main_z = logits.clone().requires_grad_(True)
        torch.manual_seed(seed)
        ours_value = ours(ours_z, labels)
        torch.manual_seed(seed)
        main_value = main_loss(main_z, labels)
        assert ours_value.item() == pytest.approx(main_value.item(), rel=1e-12)
        ours_value.backward(), main_value.backward()
        assert torch.allclose(ours_z.grad, main_z.grad, rtol=0, atol=1e-14)
    # The federated loss penalises fewer negatives than the plain sigmoid CE.
    assert ours_value.item() < SigmoidCrossEntropyLoss()(logits, labels).item()


def test_federated_class_weights_are_detectron2_mains_from_the_class_statistics(datasets_root, tmp_path):
    """Main's get_fed_loss_cls_weights (image_count ** power, from dataset metadata) and the box
    classifier's weights (image counts of the class-statistics file ** power) agree."""
    from detectron2.data import MetadataCatalog
    from detectron2.data.detection_utils import check_metadata_consistency

    from conftest import tiny_cfg
    from longtailseg.config import class_stats_from_config
    from longtailseg.modeling.long_tail_classifier import LongTailClassifier

    cfg = tiny_cfg("synthetic/mask_rcnn_baseline.yaml", tmp_path, "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", True,
                   "MODEL.ROI_BOX_HEAD.USE_FED_LOSS", True)
    stats = class_stats_from_config(cfg)
    name = "longtailseg_test_fed_loss_counts"
    MetadataCatalog.get(name).class_image_count = [
        {"id": i + 1, "image_count": n} for i, n in reversed(list(enumerate(stats.image_counts)))]
    fns = detectron2_main_source.functions(
        "detectron2/data/detection_utils.py", ["get_fed_loss_cls_weights"],
        {"torch": torch, "MetadataCatalog": MetadataCatalog, "Union": Union, "List": List,
         "check_metadata_consistency": check_metadata_consistency})
    expected = fns["get_fed_loss_cls_weights"](name, freq_weight_power=0.5)
    classifier = LongTailClassifier(cfg, K, 256, spatial=False, background_column=True)
    assert isinstance(classifier.loss_fn, SigmoidCrossEntropyLoss) and classifier.sigmoid_scores
    assert classifier.loss_fn.fed_num_classes == 50
    assert torch.allclose(classifier.loss_fn.fed_class_weights, expected)


def _bce(z, y):
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_eqlv2_follows_its_equations_over_two_steps():
    gamma, mu, alpha = 12.0, 0.8, 4.0
    loss = build_loss("EQLv2", ignore_index=-1, gamma=gamma, mu=mu, alpha=alpha)
    assert loss.sigmoid_scores and loss.needs_background_column
    loss.check_num_classes(K + 1)
    steps = [_boxes(seed=s, classes=(0, 3, 7, 18)) for s in range(2)]
    positive, negative = torch.zeros(K, dtype=torch.float64), torch.zeros(K, dtype=torch.float64)
    for step, (logits, labels) in enumerate(steps):
        n = len(labels)
        y = [[1.0 if labels[i] == j else 0.0 for j in range(K)] for i in range(n)]
        if step == 0:  # no gradient yet: weights 1, plain sigmoid CE
            q, r = [1.0] * K, [1.0] * K
        else:  # eqs. 5-7 from the gradients of the step before
            g = [positive[j].item() / negative[j].item() for j in range(K)]
            q = [1 / (1 + math.exp(-gamma * (g_j - mu))) for g_j in g]
            r = [1 + alpha * (1 - q_j) for q_j in q]
        expected = sum((r[j] if y[i][j] else q[j]) * _bce(logits[i, j].item(), y[i][j])
                       for i in range(n) for j in range(K)) / n
        z = logits.clone().requires_grad_(True)
        value = loss(z, labels)
        assert value.item() == pytest.approx(expected, rel=1e-6)  # float32 sums
        (value * n).backward()  # the gradient of the step's summed loss, as the paper accumulates
        target = F.one_hot(labels, K + 1)[:, :K].double()
        positive += (z.grad[:, :K].abs() * target).sum(0)
        negative += (z.grad[:, :K].abs() * (1 - target)).sum(0)
        assert torch.allclose(loss.positive_gradients.double(), positive, rtol=1e-5)
        assert torch.allclose(loss.negative_gradients.double(), negative, rtol=1e-5)
        assert torch.all(z.grad[:, K] == 0)  # the background logit is not used
    q, r = loss.term_weights(K)
    # Classes never seen as positives get their negatives suppressed; seen ones far less so.
    assert q[1] < 1e-3 and q[0] > 10 * q[1] and torch.allclose(r, 1 + alpha * (1 - q))


def test_eqlv2_state_is_saved_and_loaded():
    loss = build_loss("EQLv2", ignore_index=-1)
    loss.check_num_classes(K + 1)
    loss(*_boxes())
    fresh = build_loss("EQLv2", ignore_index=-1)
    fresh.check_num_classes(K + 1)
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.positive_gradients, loss.positive_gradients)
    logits, labels = _boxes(seed=3)
    assert fresh(logits, labels).item() == pytest.approx(loss(logits, labels).item())


def test_norcal_is_the_softmax_of_logits_less_gamma_log_counts():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, K + 1, generator=g, dtype=torch.float64)
    counts = torch.randint(1, 1000, (K,), generator=g).double()
    gamma = 0.7
    expected = F.softmax(torch.cat([logits[:, :K] - gamma * counts.log(), logits[:, K:]], 1), 1)
    calibrated = normalised_calibration(F.softmax(logits, 1), counts, gamma)
    assert torch.allclose(calibrated, expected, atol=1e-12)
    assert torch.allclose(calibrated.sum(1), torch.ones(6, dtype=torch.float64))
    # background's share grows: every foreground score was divided by n^gamma >= 1
    assert torch.all(calibrated[:, K] >= F.softmax(logits, 1)[:, K])
    assert torch.allclose(normalised_calibration(F.softmax(logits, 1), counts, 0.0), F.softmax(logits, 1))
    # rarer classes gain against frequent ones
    ratio = calibrated[:, :K] / F.softmax(logits, 1)[:, :K]
    rare, frequent = counts.argmin(), counts.argmax()
    assert torch.all(ratio[:, rare] > ratio[:, frequent])
