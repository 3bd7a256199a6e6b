"""BLV: the shift per class matches its expectation; nothing changes in eval mode."""
import math

import pytest
import torch

from longtailseg.longtail.variation import LogitVariation, draw_noise, noise_std, rarity_scale

COUNTS = [1_000_000, 100_000, 10_000, 1_000, 10]


def _expected_abs_clamped_normal(sigma):
    """E|clamp(eps, -1, 1)| for eps ~ N(0, sigma^2), in closed form."""
    a = 1.0 / sigma
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    p_inside = math.erf(a / math.sqrt(2))  # P(|eps| < 1)
    # E[|eps|; |eps|<1] = 2*sigma*(phi(0) - phi(a)); the rest contributes 1 * P(|eps| >= 1)
    return 2 * sigma * (1 / math.sqrt(2 * math.pi) - phi) + (1 - p_inside)


def test_rarity_scale_formula():
    f = [math.log(sum(COUNTS)) - math.log(n) for n in COUNTS]
    expected = [x / max(f) for x in f]
    assert rarity_scale(COUNTS).tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("shape", [(64, 5, 32, 32), (20000, 5)])
def test_mean_shift_per_class_matches_expectation(shape):
    torch.manual_seed(0)
    blv = LogitVariation(COUNTS, sigma=4.0).train()
    shift = blv(torch.zeros(shape))
    per_class = shift.transpose(0, 1).reshape(5, -1)
    expected = _expected_abs_clamped_normal(4.0) * rarity_scale(COUNTS)
    assert _expected_abs_clamped_normal(4.0) == pytest.approx(0.90, abs=0.01)  # METHODS.md
    n = per_class.shape[1]
    # each element lies in [0, scale_c]; its std is below scale_c / 2
    tolerance = 5 * rarity_scale(COUNTS) / 2 / math.sqrt(n) + 1e-6
    assert (per_class.mean(1) - expected).abs().le(tolerance).all()
    assert per_class.mean(1).argmax() == 4  # rarest class shifted most
    assert per_class[0].abs().max() < 0.05  # most frequent: almost no shift
    assert (per_class >= 0).all() and (per_class <= rarity_scale(COUNTS)[:, None] + 1e-6).all()


def test_identity_in_eval_mode_and_new_noise_each_call():
    blv = LogitVariation(COUNTS, sigma=4.0)
    logits = torch.randn(2, 5, 4, 4)
    blv.eval()
    assert torch.equal(blv(logits), logits)
    blv.train()
    assert not torch.equal(blv(logits), blv(logits))


def test_follows_the_logits_dtype_and_refuses_wrong_class_count():
    blv = LogitVariation(COUNTS).train()
    assert blv(torch.zeros(3, 5, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="expects 5 classes"):
        blv(torch.zeros(3, 6))


def test_gradient_passes_through_unchanged():
    blv = LogitVariation(COUNTS).train()
    logits = torch.randn(4, 5, requires_grad=True)
    blv(logits).sum().backward()
    assert torch.equal(logits.grad, torch.ones(4, 5))


def test_noise_is_bit_for_bit_the_clamped_scaled_standard_normal():
    blv = LogitVariation(COUNTS, sigma=4.0).train()
    z = torch.zeros(3, 5, 17, 9)  # so that the output is noise * scale, rounded once
    for _ in range(2):  # the second call draws into the kept buffer
        seed = torch.seed()
        out = blv(z)
        torch.manual_seed(seed)
        reference = (torch.randn_like(z) * 4.0).clamp(-1.0, 1.0).abs() * rarity_scale(COUNTS).view(1, 5, 1, 1)
        assert torch.equal(out, reference)


@pytest.mark.parametrize("sigma", [0.5, 4.0])
def test_reused_noise_buffer_keeps_the_draws_exact_and_independent(sigma):
    torch.manual_seed(0)
    blv = LogitVariation([1, 1, 1, 1, 10], sigma=sigma).train()  # classes 0..3 scale 1
    draws = [blv(torch.zeros(4000, 5))[:, :4].clone() for _ in range(3)]  # same buffer each time
    for d in draws:
        n = d.numel()
        assert d.mean().item() == pytest.approx(_expected_abs_clamped_normal(sigma), abs=5 * 0.5 / math.sqrt(n))
        saturated = 1 - math.erf(1 / (sigma * math.sqrt(2)))  # P(|eps| >= 1)
        assert (d == 1).float().mean().item() == pytest.approx(saturated, abs=5 * 0.5 / math.sqrt(n))
    # consecutive draws and neighbouring elements are uncorrelated
    a, b = draws[0].flatten(), draws[1].flatten()
    assert not torch.equal(a, b)
    for x, y in ((a, b), (a[:-1], a[1:])):
        corr = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(x.numel())


def test_two_calls_before_backward_both_get_their_gradient():
    blv = LogitVariation(COUNTS, sigma=4.0).train()
    x1, x2 = torch.zeros(2, 5, 4, 4, requires_grad=True), torch.zeros(2, 5, 4, 4, requires_grad=True)
    first = blv(x1)
    second = blv(x2)  # redraws into the buffer the first call used
    ((first * 2).sum() + second.sum()).backward()
    assert torch.equal(x1.grad, torch.full_like(x1, 2.0)) and torch.equal(x2.grad, torch.ones_like(x2))
    assert not torch.equal(first, second)


# --- the noise distributions PAT compares (Gaussian, Uniform, Xavier) -------------------------------

def _xavier_std(sigma, shape):
    """Glorot's std with gain sigma, the fans worked out by hand: (N, C, H, W) -> fan_in C*H*W,
    fan_out N*H*W; (R, C) -> C, R."""
    spatial = shape[2] * shape[3] if len(shape) == 4 else 1
    return sigma * math.sqrt(2.0 / (shape[1] * spatial + shape[0] * spatial))


@pytest.mark.parametrize("distribution, sigma, shape", [
    ("gaussian", 0.5, (400_000, 5)),
    ("uniform", 0.5, (400_000, 5)),
    ("uniform", 0.2, (8, 5, 100, 100)),
    ("xavier", 4.0, (8, 5, 100, 100)),
    ("xavier", 300.0, (400_000, 5)),
])
def test_each_distribution_has_its_documented_moments(distribution, sigma, shape):
    torch.manual_seed(0)
    eps = draw_noise(torch.empty(shape, dtype=torch.float64), distribution, sigma)
    std = _xavier_std(sigma, shape) if distribution == "xavier" else sigma
    assert noise_std(distribution, sigma, shape) == pytest.approx(std)
    n = eps.numel()
    assert eps.mean().item() == pytest.approx(0.0, abs=5 * std / math.sqrt(n))
    # the sample std's standard error is at most std * sqrt(2 / n) for these laws (kurtosis <= 3)
    assert eps.std().item() == pytest.approx(std, abs=5 * std * math.sqrt(2.0 / n))
    kurtosis = ((eps - eps.mean()) ** 4).mean().item() / eps.var().item() ** 2
    assert kurtosis == pytest.approx(1.8 if distribution == "uniform" else 3.0, abs=0.05)
    if distribution == "uniform":
        assert eps.abs().max().item() <= math.sqrt(3) * sigma


@pytest.mark.parametrize("distribution", ["uniform", "xavier"])
def test_every_distribution_is_training_only_and_clamped_and_scaled(distribution):
    blv = LogitVariation(COUNTS, sigma=2.0, distribution=distribution)
    logits = torch.randn(2, 5, 6, 6)
    assert torch.equal(blv.eval()(logits), logits)
    shift = blv.train()(torch.zeros(2, 5, 6, 6))
    scale = rarity_scale(COUNTS).view(1, 5, 1, 1)
    assert (shift >= 0).all() and (shift <= scale + 1e-6).all() and shift.sum() > 0


def test_uniform_mean_shift_matches_its_expectation():
    # eps ~ U(-a, a), a = sqrt(3) sigma > 1: E|clamp(eps)| = (1/a) * (1/2) + (1 - 1/a) * 1
    sigma = 1.0
    a = math.sqrt(3) * sigma
    torch.manual_seed(0)
    blv = LogitVariation([1, 1, 1, 1, 10], sigma=sigma, distribution="uniform").train()
    shift = blv(torch.zeros(200_000, 5))[:, :4]
    assert shift.mean().item() == pytest.approx(0.5 / a + (1 - 1 / a), abs=5 * 0.5 / math.sqrt(shift.numel()))


def test_gaussian_is_the_default_and_an_unknown_law_is_refused():
    assert LogitVariation(COUNTS).distribution == "gaussian"
    with pytest.raises(ValueError, match="gaussian, uniform, xavier"):
        LogitVariation(COUNTS, distribution="cauchy")


def test_distribution_is_read_from_the_config():
    from detectron2.config import get_cfg

    from longtailseg.config import add_longtailseg_config
    from longtailseg.errors import ConfigError
    from longtailseg.modeling.long_tail_classifier import LongTailClassifier, check_blv_sigma

    cfg = get_cfg()
    add_longtailseg_config(cfg)
    assert cfg.MODEL.LONG_TAIL.BLV.DISTRIBUTION == "gaussian"
    classifier = LongTailClassifier(5, 8, spatial=True, class_counts=COUNTS, blv_sigma=1.0,
                                    blv_distribution="xavier")
    assert classifier.variation.distribution == "xavier"
    cfg.MODEL.LONG_TAIL.BLV.ENABLED = True
    cfg.MODEL.LONG_TAIL.BLV.DISTRIBUTION = "Xavier"
    with pytest.raises(ConfigError, match="MODEL.LONG_TAIL.BLV.DISTRIBUTION"):
        check_blv_sigma(cfg.MODEL.LONG_TAIL)
