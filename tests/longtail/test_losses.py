"""The loss zoo: each loss against arithmetic done here by hand, gradients, ignore labels, shapes,
and PAT's bound on beta."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from longtailseg.longtail.losses import LOSS_REGISTRY, PATLoss, build_loss

COUNTS = [100, 10, 1]
# Two labelled elements and one ignored one; the second's true class (2) is not the most likely.
ROWS = [[2.0, 0.5, -1.0], [1.0, 0.0, 0.5], [50.0, -50.0, 0.0]]
LABELS = [0, 2, 255]

OPTIONS = {
    "CE": {}, "Focal": {"gamma": 2.0}, "CB": {"beta": 0.9}, "CBFocal": {"beta": 0.9, "gamma": 2.0},
    "BMS": {}, "LA": {"tau": 0.5}, "LDAM": {"max_margin": 0.5, "scale": 2.0},
    "Seesaw": {"p": 0.8, "q": 2.0}, "PAT": {"tau": 2.0},
}


def _build(name, **extra):
    return build_loss(name, class_counts=COUNTS, ignore_index=255, **{**OPTIONS[name], **extra})


def _log_softmax(z):
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def _cb_weights(beta):
    w = [(1 - beta) / (1 - beta ** n) for n in COUNTS]
    return [x * len(w) / sum(w) for x in w]


def _expected_element(name, z, y):
    """One element's loss, from the papers' formulas in plain arithmetic."""
    log_p = _log_softmax(z)
    if name == "CE":
        return -log_p[y]
    if name == "Focal":
        return -(1 - math.exp(log_p[y])) ** 2 * log_p[y]
    if name == "CB":
        return -_cb_weights(0.9)[y] * log_p[y]
    if name == "CBFocal":
        return -_cb_weights(0.9)[y] * (1 - math.exp(log_p[y])) ** 2 * log_p[y]
    if name == "BMS":
        return -_log_softmax([v + math.log(n) for v, n in zip(z, COUNTS)])[y]
    if name == "LA":
        total = sum(COUNTS)
        return -_log_softmax([v + 0.5 * math.log(n / total) for v, n in zip(z, COUNTS)])[y]
    if name == "LDAM":
        raw = [n ** -0.25 for n in COUNTS]
        margins = [0.5 * r / max(raw) for r in raw]
        return -_log_softmax([2.0 * (v - (margins[y] if c == y else 0.0)) for c, v in enumerate(z)])[y]
    if name == "Seesaw":
        sigma = [math.exp(v) for v in log_p]
        denominator = math.exp(z[y])
        for j, v in enumerate(z):
            if j == y:
                continue
            mitigation = (COUNTS[j] / COUNTS[y]) ** 0.8 if COUNTS[j] < COUNTS[y] else 1.0
            compensation = (sigma[j] / sigma[y]) ** 2.0 if sigma[j] > sigma[y] else 1.0
            denominator += mitigation * compensation * math.exp(v)
        return -(z[y] - math.log(denominator))
    if name == "PAT":
        log_p_tau = _log_softmax([v / 2.0 for v in z])
        beta = 0.5 * math.exp(3 * (1 - math.exp(log_p_tau[y])))
        return -beta * log_p_tau[y] / 3  # 1/C of the mean over the class axis
    raise KeyError(name)


def _box_inputs(dtype=torch.float32):
    return torch.tensor(ROWS, dtype=dtype), torch.tensor(LABELS)


def _pixel_inputs(dtype=torch.float32):
    """The same three elements as a 1x1x3 image: (1, C, 1, 3) logits, (1, 1, 3) labels."""
    z, y = _box_inputs(dtype)
    return z.t().reshape(1, 3, 1, 3), y.reshape(1, 1, 3)


def test_registry_holds_the_zoo():
    # The sigmoid box-classifier losses have their own tests (test_box_losses.py).
    assert {name for name, _ in LOSS_REGISTRY} == set(OPTIONS) | {"EQLv2"}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_hand_computed_value(name):
    expected = sum(_expected_element(name, z, y) for z, y in zip(ROWS, LABELS) if y != 255) / 2
    loss = _build(name)
    for logits, labels in (_box_inputs(), _pixel_inputs()):
        assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_extra_class_weights_multiply_each_element(name):
    w = [0.5, 2.0, 3.0]
    expected = sum(w[y] * _expected_element(name, z, y) for z, y in zip(ROWS, LABELS) if y != 255) / 2
    logits, labels = _box_inputs()
    assert _build(name)(logits, labels, class_weights=torch.tensor(w)).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_gradcheck_double(name):
    # Seesaw's sigma and PAT's bound enter piecewise: the true class is the most likely in every
    # row, away from the kinks, so finite differences see the same branch.
    z = torch.tensor([[1.3, 0.2, -0.4], [0.1, 0.9, -0.3], [-0.2, 0.1, 0.7], [0.3, -0.1, 0.2]],
                     dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 255])
    w = torch.tensor([1.5, 0.5, 1.0], dtype=torch.float64)
    loss = _build(name)
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (z,))
    assert torch.autograd.gradcheck(lambda x: loss(x, y, class_weights=w), (z,))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_ignored_pixels_get_exactly_zero_gradient(name):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    labels = torch.randint(0, 3, (2, 4, 5), generator=g)
    ignored = torch.rand(2, 4, 5, generator=g) < 0.4
    labels[ignored] = 255
    logits[:, 0][ignored] = 1e30  # would be inf / nan in a masked loss
    logits.requires_grad_(True)
    loss = _build(name)(logits, labels)
    loss.backward()
    grad = logits.grad.movedim(1, -1)
    assert torch.isfinite(loss)
    assert torch.all(grad[ignored] == 0)
    assert torch.all(torch.isfinite(grad)) and grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_pixel_and_box_shapes_agree(name):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 4, 5, generator=g)
    labels = torch.randint(0, 3, (1, 4, 5), generator=g)
    labels[0, 0, :2] = 255
    rows = logits.movedim(1, -1).reshape(-1, 3)
    loss = _build(name)  # one image, so PAT's homogenization groups the same elements
    assert loss(logits, labels).item() == pytest.approx(loss(rows, labels.reshape(-1)).item(), rel=1e-6)


def test_all_ignored_gives_zero():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.full((1, 2, 2), 255)
    for name in OPTIONS:
        assert _build(name)(logits, labels).item() == 0.0


def test_ce_unchanged():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 6, 7, generator=g)
    labels = torch.randint(0, 5, (2, 6, 7), generator=g)
    labels[:, :2] = 255
    ce = build_loss("CE")
    assert torch.allclose(ce(logits, labels), F.cross_entropy(logits, labels, ignore_index=255))
    w = torch.rand(5, generator=g)
    per_element = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    expected = (per_element * w[labels.clamp(max=4)]).sum() / (labels != 255).sum()
    assert torch.allclose(ce(logits, labels, class_weights=w), expected)


def test_pat_homogenization_by_hand():
    # image 0: two pixels of class 0 and one of class 1; image 1: one of class 2; image 2: all ignored
    z = [[0.2, -0.1, 0.4], [1.0, 0.3, -0.5], [-0.3, 0.6, 0.1], [0.5, 0.5, 0.9]]
    logits = torch.zeros(3, 3, 1, 3)
    labels = torch.full((3, 1, 3), 255)
    for (n, w), row, y in zip([(0, 0), (0, 1), (0, 2), (1, 0)], z, [0, 0, 1, 2]):
        logits[n, :, 0, w] = torch.tensor(row)
        labels[n, 0, w] = y
    el = [_expected_element("PAT", row, y) for row, y in zip(z, [0, 0, 1, 2])]
    image0 = ((el[0] + el[1]) / 2 + el[2]) / 2  # each present class weighs the same
    image1 = el[3]
    loss = _build("PAT")
    assert loss(logits, labels).item() == pytest.approx((image0 + image1) / 2, rel=1e-5)
    plain = _build("PAT", homogenize=False)
    assert plain(logits, labels).item() == pytest.approx(sum(el) / 4, rel=1e-5)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits.double().requires_grad_(),))


def test_pat_constant_and_detach():
    logits, labels = _box_inputs()
    log_p = [_log_softmax([v / 2.0 for v in z]) for z in ROWS[:2]]
    expected = sum(-0.5 * math.exp(7.0 * (1 - math.exp(lp[y]))) * lp[y] / 3
                   for lp, y in zip(log_p, LABELS)) / 2
    assert _build("PAT", constant=7.0)(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    z = logits.clone().requires_grad_(True)
    _build("PAT", detach_beta=True)(z, labels).backward()
    detached = z.grad.clone()
    z.grad = None
    _build("PAT")(z, labels).backward()
    assert not torch.allclose(detached, z.grad)  # beta's own gradient is kept by default


def test_pat_finite_with_150_classes_and_extreme_logits(monkeypatch):
    monkeypatch.setattr(PATLoss, "_bound_warned", False)
    g = torch.Generator().manual_seed(3)
    logits = (torch.randint(0, 2, (2, 150, 4, 4), generator=g).float() * 2 - 1) * 1e4
    labels = torch.randint(0, 150, (2, 4, 4), generator=g)
    labels[0, 0] = 255
    loss_fn = build_loss("PAT")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            z = logits.clone().requires_grad_(True)
            loss = loss_fn(z, labels)
            loss.backward()
            assert torch.isfinite(loss) and torch.all(torch.isfinite(z.grad))
    assert len([w for w in caught if "max_exponent" in str(w.message)]) == 1

    # one box whose true class has p ~ 0: beta is at its bound exp(30) / 2
    z = torch.zeros(1, 150)
    z[0, 0], z[0, 1] = -1e4, 1e4
    value = build_loss("PAT")(z, torch.tensor([0])).item()
    assert value == pytest.approx(0.5 * math.exp(30) * 2e4 / 150, rel=1e-4)


def test_pat_no_warning_below_the_bound(monkeypatch):
    monkeypatch.setattr(PATLoss, "_bound_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _build("PAT")(*_box_inputs())  # K = 3 < 30


def test_ldam_deferred_reweighting():
    loss = _build("LDAM", drw_start=10, drw_beta=0.9)
    logits, labels = _box_inputs()
    plain = loss(logits, labels).item()
    loss.iteration = 10
    w = _cb_weights(0.9)
    expected = sum(w[y] * _expected_element("LDAM", z, y) for z, y in zip(ROWS, LABELS) if y != 255) / 2
    assert plain != pytest.approx(expected)
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_build_errors():
    with pytest.raises(KeyError, match="PAT"):
        build_loss("Nope")
    with pytest.raises(ValueError, match="class counts"):
        build_loss("BMS")
    build_loss("PAT")  # PAT, Focal and CE need no counts
