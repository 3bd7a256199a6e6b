"""The cosine classifier: normalised features and weight rows, learnable scale, no bias."""
import pytest
import torch

from longtailseg.longtail.cosine import CosineClassifier


def test_logits_are_bounded_by_the_scale_and_reach_it():
    torch.manual_seed(0)
    cls = CosineClassifier(8, 5)
    assert float(cls.scale) == 20.0 and cls.scale.requires_grad
    x = torch.randn(64, 8) * 1000  # feature norms do not matter
    logits = cls(x)
    assert logits.abs().max() <= 20.0 + 1e-4
    with torch.no_grad():
        cls.scale.fill_(3.0)
    aligned = cls(cls.weight.detach()[2:3] * 7.0)  # a feature along class 2's weight row
    assert float(aligned[0, 2]) == pytest.approx(3.0, abs=1e-5)
    assert cls(x).abs().max() <= 3.0 + 1e-5


def test_formula_and_invariance_to_feature_and_weight_norms():
    torch.manual_seed(0)
    cls = CosineClassifier(6, 4, init_scale=10.0)
    x = torch.randn(5, 6)
    w = cls.weight.detach()
    expected = 10.0 * (x / x.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).t()
    assert torch.allclose(cls(x), expected, atol=1e-5)
    assert torch.allclose(cls(3.5 * x), cls(x), atol=1e-5)
    with torch.no_grad():
        cls.weight.mul_(100.0)
    assert torch.allclose(cls(x), expected, atol=1e-5)


def test_scale_learns_and_a_zero_feature_gives_zero_logits():
    cls = CosineClassifier(4, 3)
    assert [n for n, _ in cls.named_parameters()] == ["weight", "scale"]  # no bias
    out = cls(torch.zeros(2, 4))
    assert torch.equal(out, torch.zeros(2, 3))
    loss = torch.nn.functional.cross_entropy(cls(torch.randn(3, 4)), torch.tensor([0, 1, 2]))
    loss.backward()
    assert cls.scale.grad is not None and torch.isfinite(cls.scale.grad)


def test_non_positive_initial_scale_is_refused():
    with pytest.raises(ValueError, match="scale"):
        CosineClassifier(4, 3, init_scale=0.0)
