"""BLV: the shift per class matches its expectation; nothing changes in eval mode."""
import math

import pytest
import torch

from longtailseg.longtail.variation import LogitVariation, rarity_scale

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
