"""MEDOE math: label masking, expert losses, oracle, ensembles, decision-maker."""
import math

import pytest
import torch
import torch.nn.functional as F

from longtailseg.longtail import experts as E

# A known split of 6 classes: head {0, 1}, body {2, 3}, tail {4, 5}.
GROUPS = {"head": [0, 1], "body": [2, 3], "tail": [4, 5]}
PAPER_EXPERTS = [["head", "body", "tail"], ["body", "tail"], ["tail"]]


def paper_masks():
    return E.expert_class_masks(GROUPS, PAPER_EXPERTS, 6)


def test_label_masking_gives_the_papers_class_sets():
    masks = paper_masks()
    owned = [torch.nonzero(m).flatten().tolist() for m in masks]
    assert owned == [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5], [4, 5]]


def test_class_sets_are_refused_when_the_first_expert_lacks_classes_or_a_group_is_unknown():
    with pytest.raises(ValueError, match="first expert must own every class"):
        E.expert_class_masks(GROUPS, [["body", "tail"], ["tail"]], 6)
    with pytest.raises(ValueError, match="unknown class group 'rare'"):
        E.expert_class_masks(GROUPS, [["head", "body", "tail"], ["rare"]], 6)
    with pytest.raises(ValueError, match="owns no class"):
        E.expert_class_masks({**GROUPS, "empty": []}, [["head", "body", "tail"], ["empty"]], 6)


def test_expert_ce_counts_only_its_own_classes_with_a_softmax_over_them():
    masks = paper_masks()
    logits = torch.randn(1, 6, 1, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[[0, 4, 5, 255]]])  # a head pixel, two tail pixels, one ignored
    ce, _ = E.expert_losses(logits, targets, masks[2])
    # By hand: the tail expert sees pixels 1 and 2 only, softmax over classes {4, 5}.
    expected = []
    for pixel, label in ((1, 4), (2, 5)):
        z = logits[0, [4, 5], 0, pixel]
        expected.append(-(z[label - 4] - torch.logsumexp(z, 0)))
    assert ce.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)


def test_auxiliary_loss_is_l2_at_interfering_pixels_plus_kl_per_image():
    masks = paper_masks()
    logits = torch.randn(1, 6, 1, 3, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[[0, 1, 4]]])  # two interfering (head) pixels for the tail expert
    _, aux = E.expert_losses(logits, targets, masks[2])
    own = logits[0, [4, 5], 0]  # (2 classes, 3 pixels)
    l2 = own[:, :2].pow(2).mean()
    p = F.softmax(own[:, 2], dim=0)  # the only owned pixel, class 4 -> q = (1, 0)
    kl = -math.log(p[0].item())
    assert aux.item() == pytest.approx(l2.item() + kl, rel=1e-5)


def test_kl_vanishes_when_the_predicted_distribution_matches_the_labels():
    masks = paper_masks()
    # Every pixel predicts (0.75, 0.25) over the tail classes; labels are 3 x class 4, 1 x class 5.
    logits = torch.zeros(1, 6, 1, 4)
    logits[:, 4] = math.log(3.0)
    targets = torch.tensor([[[4, 4, 4, 5]]])
    _, aux = E.expert_losses(logits, targets, masks[2])  # no interfering pixel: aux = KL
    assert aux.item() == pytest.approx(0.0, abs=1e-6)


def test_expert_losses_are_zero_with_a_graph_when_the_batch_has_none_of_its_pixels():
    masks = paper_masks()
    logits = torch.randn(1, 6, 2, 2, requires_grad=True)
    ce, aux = E.expert_losses(logits, torch.full((1, 2, 2), 255), masks[2])
    assert ce.item() == 0 and aux.item() == 0
    (ce + aux).backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_expert_probabilities_are_zero_outside_the_experts_classes():
    masks = paper_masks()
    logits = [torch.randn(2, 6, 3, 3) for _ in range(3)]
    probs = E.expert_probabilities(logits, masks)
    assert torch.allclose(probs.sum(dim=2), torch.ones(3, 2, 3, 3))
    assert probs[2][:, :4].abs().max() == 0 and probs[1][:, :2].abs().max() == 0


def one_hot_expert_outputs(predictions):
    """(K, 1, 6, 1, P) probabilities: expert k predicts ``predictions[k][p]`` at pixel p."""
    return torch.stack([F.one_hot(torch.tensor(p), 6).T.float()[None, :, None] for p in predictions])


def test_oracle_takes_the_most_specific_expert_owning_the_true_class():
    masks = paper_masks()
    assert E.most_specific_expert(masks).tolist() == [0, 0, 1, 1, 2, 2]
    # Expert k predicts class 2k+1... at every pixel, distinct per expert, so the choice shows.
    probs = one_hot_expert_outputs([[1, 1, 1, 1], [3, 3, 3, 3], [5, 5, 5, 5]])
    targets = torch.tensor([[[0, 2, 4, 255]]])
    chosen = E.oracle_probabilities(probs, masks, targets).argmax(dim=1)
    assert chosen.tolist() == [[[1, 3, 5, 1]]]  # head -> expert 1, body -> 2, tail -> 3, ignore -> 1


def test_softmax_threshold_picks_the_most_specific_confident_expert():
    masks = paper_masks()
    probs = torch.zeros(3, 1, 6, 1, 3)
    probs[0, 0, 0] = 1.0  # expert 1 says class 0 everywhere
    probs[1, 0, 2] = torch.tensor([0.9, 0.5, 0.2])  # body expert: confident at pixels 0 and 2
    probs[1, 0, 3] = 1 - probs[1, 0, 2]
    probs[2, 0, 4] = torch.tensor([0.5, 0.5, 0.7])  # tail expert: confident at pixel 2 only
    probs[2, 0, 5] = 1 - probs[2, 0, 4]
    out = E.softmax_threshold(probs, masks, threshold=0.6).argmax(dim=1)
    # pixel 0: body expert; pixel 1: nobody confident -> expert 1; pixel 2: tail before body.
    assert out.tolist() == [[[2, 0, 4]]]


def test_argmax_confidence_takes_the_expert_with_the_highest_top_probability():
    probs = torch.zeros(3, 1, 6, 1, 2)
    probs[0, 0, 0] = torch.tensor([0.6, 0.9])
    probs[0, 0, 1] = 1 - probs[0, 0, 0]
    probs[2, 0, 4] = torch.tensor([0.8, 0.5])
    probs[2, 0, 5] = 1 - probs[2, 0, 4]
    assert E.argmax_confidence(probs).argmax(dim=1).tolist() == [[[4, 0]]]


def test_group_average_by_hand():
    masks = paper_masks()
    probs = E.expert_probabilities([torch.randn(2, 6, 3, 3) for _ in range(3)], masks)
    averaged = E.group_average(probs, masks)
    # Class 4 is owned by all three experts, class 2 by two, class 0 by one (before renormalising).
    raw = torch.stack([probs[0, :, 0], probs[:2, :, 2].mean(0), probs[:, :, 4].mean(0)], dim=1)
    norm = (probs.sum(0) / masks.sum(0).view(1, -1, 1, 1)).sum(1, keepdim=True)
    assert torch.allclose(averaged[:, [0, 2, 4]], raw / norm, atol=1e-6)


def test_untrained_decision_maker_is_the_normalised_geometric_mean_of_owning_experts():
    masks = paper_masks()
    probs = E.expert_probabilities([torch.randn(2, 6, 3, 3) for _ in range(3)], masks)
    out = E.MOEDecisionMaker(masks)(probs.clamp_min(1e-30).log())
    geo = torch.stack([probs[0, :, 0], probs[0, :, 1],
                       (probs[0, :, 2] * probs[1, :, 2]).sqrt(), (probs[0, :, 3] * probs[1, :, 3]).sqrt(),
                       (probs[:, :, 4].prod(0)) ** (1 / 3), (probs[:, :, 5].prod(0)) ** (1 / 3)], dim=1)
    assert torch.allclose(out, geo / geo.sum(1, keepdim=True), atol=1e-5)


def test_decision_maker_gradients_stay_bounded_where_an_expert_gives_almost_zero():
    masks = paper_masks()
    probs = torch.full((3, 1, 6, 1, 1), 1e-30)
    probs[:, :, 0] = 1.0  # every expert is sure of class 0 ...
    probs[1:, :, 2] = 1.0
    probs[2, :, 4] = 1.0
    maker = E.MOEDecisionMaker(masks)
    ce, _ = E.moe_losses(maker.log_probabilities(probs.log()), torch.tensor([[[5]]]),
                         torch.zeros(6, dtype=torch.bool))
    ce.backward()  # ... but the pixel is class 5
    assert torch.isfinite(ce)
    assert maker.shift.grad.abs().max() <= 1.0 and maker.log_scale.grad.isfinite().all()


def test_decision_weights_are_zero_for_experts_not_owning_a_class_and_sum_to_one():
    maker = E.MOEDecisionMaker(paper_masks())
    with torch.no_grad():
        maker.decision_logits.normal_()
    w = maker.decision_weights()
    assert torch.allclose(w.sum(0), torch.ones(6))
    assert w[1, :2].abs().max() == 0 and w[2, :4].abs().max() == 0


def test_moe_losses_ce_and_tail_penalty_by_hand():
    probs = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]]).T.reshape(1, 3, 1, 2)
    targets = torch.tensor([[[0, 2]]])
    tail = torch.tensor([False, False, True])
    ce, penalty = E.moe_losses(probs.log(), targets, tail)
    assert ce.item() == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2, rel=1e-6)
    assert penalty.item() == pytest.approx(0.3, rel=1e-6)  # only pixel 0 is not tail


@pytest.mark.parametrize("target_score", [-10.0, -30.0, -120.0])  # P_y 4.5e-5, 9.4e-14, 7.7e-53
def test_moe_cross_entropy_keeps_its_value_and_gradient_at_tiny_probabilities(target_score):
    """CE = -log P_y from the log-softmax: the float64 value and the gradient P - onehot of the
    scores, also where P_y is below any clamp (1e-8) or underflows float32 (1e-45)."""
    masks = paper_masks()
    maker = E.MOEDecisionMaker(masks)
    log_p = torch.zeros(3, 1, 6, 1, 2)  # expert log-probabilities; the maker starts at their mean
    log_p[:, :, 5, :, 0] = target_score  # pixel 0: every expert all but excludes its class 5
    log_p = log_p.requires_grad_()
    targets = torch.tensor([[[5, 0]]])
    ce, _ = E.moe_losses(maker.log_probabilities(log_p), targets, torch.zeros(6, dtype=torch.bool))
    ce.backward()
    scores = maker.scores(log_p.detach()).double()
    expected = F.cross_entropy(scores, targets)  # unclamped, float64
    assert ce.item() == pytest.approx(expected.item(), rel=1e-5)
    # The shift of class 5 moves -log P_5 at pixel 0: d CE / d b_5 = (P_5 - 1) / 2 + P_5(pixel 1) / 2
    probs = F.softmax(scores, dim=1)
    weights = maker.decision_weights()[:, 5].double()
    expected_b5 = ((probs[0, 5, 0, 0] - 1) + probs[0, 5, 0, 1]) / 2 * weights
    assert torch.allclose(maker.shift.grad[:, 5].double(), expected_b5, rtol=1e-4)
    assert maker.shift.grad[:, 5].abs().min() > 0.1 and log_p.grad[:, 0, 5, 0, 0].abs().min() > 0


def moe_reference(maker, probs):
    """P = softmax_c(sum_k w_kc (a_kc log p_kc + b_kc)) written term by term from the stacked
    probabilities (K, N, C, H, W), log p floored at 1e-30, experts not owning c weighted 0."""
    shape = (probs.shape[0], 1, probs.shape[2], 1, 1)
    owned = maker.masks.view(shape)
    log_p = torch.where(owned, probs.clamp_min(1e-30).log(), torch.zeros_like(probs))
    calibrated = maker.log_scale.exp().view(shape) * log_p + maker.shift.view(shape)
    return F.softmax((maker.decision_weights().view(shape) * calibrated).sum(dim=0), dim=1)


@pytest.mark.parametrize("logit_scale", [1.0, 40.0])  # 40: probabilities below the 1e-30 floor
def test_decision_maker_in_log_space_equals_the_formula(logit_scale):
    g = torch.Generator().manual_seed(0)
    masks = paper_masks()
    maker = E.MOEDecisionMaker(masks)
    with torch.no_grad():
        for param in maker.parameters():
            param.copy_(torch.randn(param.shape, generator=g))
    logits = [torch.randn(2, 6, 5, 7, generator=g) * logit_scale for _ in range(3)]
    reference = moe_reference(maker, E.expert_probabilities(logits, masks))
    streamed = maker(E.expert_log_probabilities(z, m) for z, m in zip(logits, masks))
    assert (streamed - reference).abs().max() < 1e-5
    # The gradients of the trained parameters agree too.
    loss_ref = (moe_reference(maker, E.expert_probabilities(logits, masks)) ** 2).sum()
    ref_grads = torch.autograd.grad(loss_ref, list(maker.parameters()))
    log_probs = [E.expert_log_probabilities(z, m) for z, m in zip(logits, masks)]
    new_grads = torch.autograd.grad((maker(log_probs) ** 2).sum(), list(maker.parameters()))
    for a, b in zip(ref_grads, new_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_decision_maker_needs_one_output_per_expert():
    maker = E.MOEDecisionMaker(paper_masks())
    with pytest.raises(ValueError, match="3 experts; got 2"):
        maker(torch.zeros(2, 1, 6, 2, 2))


def test_labels_at_takes_the_label_at_each_cells_centre():
    targets = torch.arange(64).view(1, 8, 8)  # label = 8 * row + column
    assert E.labels_at(targets, (2, 2)).tolist() == [[[18, 22], [50, 54]]]  # rows / columns 2, 6
    assert E.labels_at(targets, (8, 8)).equal(targets)
    # Sizes that do not divide: centres (i + 0.5) * 8 / 3 -> 1, 4, 6.
    assert E.labels_at(targets, (3, 3)).tolist() == [[[9, 12, 14], [33, 36, 38], [49, 52, 54]]]


def test_auxiliary_kl_is_the_mean_over_images_that_have_owned_pixels():
    masks = paper_masks()
    logits = torch.randn(3, 6, 2, 3, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([[[4, 4, 5], [0, 255, 5]],      # owned 4, 4, 5, 5; interfering 0
                            [[0, 1, 2], [3, 255, 255]],    # nothing owned, four interfering
                            [[5, 5, 5], [5, 4, 1]]])       # owned 5 x 4, 4; interfering 1
    aux = E.expert_auxiliary_loss(logits, targets, masks[2])
    own = logits[:, [4, 5]]
    interfering = [(0, 1, 0), (1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 0), (2, 1, 2)]
    l2 = torch.stack([own[n, :, i, j].pow(2).mean() for n, i, j in interfering]).mean()
    kls = []
    for n, owned, labels in ((0, [(0, 0), (0, 1), (0, 2), (1, 2)], [4, 4, 5, 5]),
                             (2, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)], [5, 5, 5, 5, 4])):
        p_bar = torch.stack([F.softmax(own[n, :, i, j], dim=0) for i, j in owned]).mean(0)
        q = torch.tensor([labels.count(4), labels.count(5)], dtype=torch.float) / len(labels)
        kls.append((q * (q.log() - p_bar.log())).sum())
    assert aux.item() == pytest.approx((l2 + torch.stack(kls).mean()).item(), rel=1e-5)


def test_expert_losses_is_cross_entropy_and_auxiliary_loss_at_one_resolution():
    masks = paper_masks()
    logits = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(4))
    targets = torch.randint(0, 6, (2, 4, 4), generator=torch.Generator().manual_seed(5))
    for member in masks:
        ce, aux = E.expert_losses(logits, targets, member)
        assert torch.equal(ce, E.expert_cross_entropy(logits, targets, member))
        assert torch.equal(aux, E.expert_auxiliary_loss(logits, targets, member))


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("low, size", [((8, 8), (32, 32)), ((7, 9), (25, 36)), ((5, 6), (5, 6))])
def test_upsampled_expert_ce_equals_ce_on_the_interpolated_logits(sparse, low, size):
    """Without the full-size tensor (sparse bilinear weights at the owned pixels, or a dense resize
    of the expert's classes only), the same value and gradient as upsampling all classes."""
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 6, *low, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (2, *size), generator=generator)
    targets[torch.rand(2, *size, generator=generator) < 0.2] = 255
    for member in paper_masks():
        full = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        expected = E.expert_cross_entropy(full, targets, member)
        got = E.expert_cross_entropy_upsampled(logits, targets, member, sparse=sparse)
        grad_expected, = torch.autograd.grad(expected, logits)
        grad_got, = torch.autograd.grad(got, logits)
        assert got.item() == pytest.approx(expected.item(), rel=1e-12)
        assert torch.allclose(grad_got, grad_expected, rtol=0, atol=1e-14)
        assert grad_got[:, ~member].abs().sum() == 0  # classes outside S_k get no gradient


def test_upsampled_expert_ce_is_zero_with_a_graph_without_owned_pixels():
    logits = torch.randn(1, 6, 4, 4, requires_grad=True)
    targets = torch.full((1, 16, 16), 0)  # a head class: no pixel of the tail expert
    loss = E.expert_cross_entropy_upsampled(logits, targets, paper_masks()[2])
    loss.backward()
    assert loss.item() == 0 and logits.grad.abs().max() == 0


def test_bilinear_weights_reproduce_interpolate_at_the_chosen_pixels():
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(2, 3, 5, 7, generator=generator, dtype=torch.float64)
    full = F.interpolate(image, size=(13, 16), mode="bilinear", align_corners=False)
    n, y, x = torch.randint(0, 2, (40,)), torch.randint(0, 13, (40,)), torch.randint(0, 16, (40,))
    weights = E.bilinear_weights(n, y, x, image.shape, (13, 16), torch.float64)
    rows = image.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.allclose(torch.sparse.mm(weights, rows), full[n, :, y, x], atol=1e-12)
    assert torch.allclose(torch.sparse.sum(weights, dim=1).to_dense(), torch.ones(40, dtype=torch.float64))
