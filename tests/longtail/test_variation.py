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
