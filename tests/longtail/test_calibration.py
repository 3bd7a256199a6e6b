"""DisAlign calibration and generalized re-weighting."""
import pytest
import torch

from longtailseg.longtail.calibration import DisAlignCalibration, generalized_reweighting


def test_grw_weights_follow_the_formula_and_sum_to_c():
    counts = [800.0, 150.0, 40.0, 10.0]
    rho = 0.2
    freqs = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    raw = freqs.pow(-rho)
    expected = raw / raw.sum() * 4
    weights = generalized_reweighting(counts, rho)
    assert weights.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    assert float(weights.sum()) == pytest.approx(4.0)
    assert weights.argmax() == 3 and weights.argmin() == 0


def test_grw_rho_zero_is_all_ones():
    assert generalized_reweighting([5, 50, 500], 0.0).tolist() == [1.0, 1.0, 1.0]


def test_grw_ade20k_range_from_object_info_ratios():
    # objectInfo150 Ratio of wall (most frequent) and of flag (the rarest by weight), METHODS.md:
    # with rho = 0.2 the weights run from about 0.377 to about 1.43 over the 150 classes.
    # Only the ratio between two weights is independent of the other 148 classes.
    wall, flag = 0.1576, 0.0002
    w = generalized_reweighting([wall, flag], 0.2)
    assert float(w[1] / w[0]) == pytest.approx((flag / wall) ** -0.2, rel=1e-6)
    assert 1.43 / 0.377 == pytest.approx(float(w[1] / w[0]), rel=0.02)


@pytest.mark.parametrize("spatial", [True, False])
def test_identity_at_initialisation(spatial):
    torch.manual_seed(0)
    cal = DisAlignCalibration(5, 8, spatial=spatial)
    logits = torch.randn(2, 5, 3, 3) if spatial else torch.randn(7, 5)
    features = torch.randn(2, 8, 3, 3) if spatial else torch.randn(7, 8)
    assert torch.allclose(cal(logits, features), logits, atol=0, rtol=0)


def test_formula_with_trained_parameters():
    torch.manual_seed(0)
    cal = DisAlignCalibration(3, 4, spatial=False)
    with torch.no_grad():
        cal.alpha.copy_(torch.tensor([2.0, 0.5, 1.0]))
        cal.beta.copy_(torch.tensor([0.0, 1.0, -1.0]))
    z, x = torch.randn(6, 3), torch.randn(6, 4)
    sigma = torch.sigmoid(cal.confidence(x))
    expected = sigma * (cal.alpha * z + cal.beta) + (1 - sigma) * z
    assert torch.allclose(cal(z, x), expected)


def test_foreground_only_calibration_passes_the_background_logit():
    torch.manual_seed(0)
    cal = DisAlignCalibration(4, 6, spatial=False)
    with torch.no_grad():
        cal.alpha.fill_(3.0)
        cal.beta.fill_(2.0)
    logits, features = torch.randn(5, 5), torch.randn(5, 6)  # K = 4 foreground + background
    out = cal(logits, features)
    assert torch.equal(out[:, 4], logits[:, 4])
    assert not torch.allclose(out[:, :4], logits[:, :4])
