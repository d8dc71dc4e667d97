"""Each term of the RFAU objective on hand-made tensors (issue 11): the retain, feature-shift and
output losses, and the class-wise and sample-wise forget targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rfau.methods.base import UnlearnData
from rfau.methods.rfau import (
    MIN_HOLDOUT_PER_CLASS,
    OriginalFeatures,
    anchor_weights,
    calibrated_targets,
    centroid_shift_targets,
    feature_shift_loss,
    forgotten_like,
    masked_targets,
    output_kl_loss,
    output_targets,
    regime_mask,
    unseen_reference,
    zero_residual_loss,
)


def _feats(*shapes: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


def _scales(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    return [f.pow(2).mean() for f in feats]


# --- retain: zero residual ---------------------------------------------------------------------


def test_zero_residual_gives_zero_retain_loss():
    orig = _feats((8, 16), (8, 4))
    assert float(zero_residual_loss([f.clone() for f in orig], orig, _scales(orig))) == 0.0


def test_retain_loss_is_the_scaled_squared_residual_summed_over_taps():
    orig = _feats((8, 16), (8, 4))
    residual = _feats((8, 16), (8, 4), seed=1)
    moved = [f + r for f, r in zip(orig, residual)]
    sc = _scales(orig)
    expected = sum(float(r.pow(2).mean() / s) for r, s in zip(residual, sc))
    assert float(zero_residual_loss(moved, orig, sc)) == pytest.approx(expected, rel=1e-5)
    # the scale makes the loss independent of a layer's magnitude
    big = [f * 10 for f in orig]
    scaled = float(zero_residual_loss([f * 10 for f in moved], big, _scales(big)))
    assert scaled == pytest.approx(expected, rel=1e-4)


# --- class-wise forget, feature variant ---------------------------------------------------------


def test_feature_shift_loss_is_zero_at_the_target_and_counts_only_masked_rows():
    target = _feats((6, 5), (6, 3))
    sc = _scales(target)
    rows = torch.tensor([True, True, False, False, True, False])
    assert float(feature_shift_loss([t.clone() for t in target], target, sc, rows)) == 0.0
    away = [t + 1.0 for t in target]  # every feature one unit off
    expected = rows.sum() * sum(1.0 / float(s) for s in sc) / len(rows)
    assert float(feature_shift_loss(away, target, sc, rows)) == pytest.approx(float(expected), rel=1e-5)
    # unmasked rows do not matter, whatever their features
    away[0][~rows] += 100.0
    assert float(feature_shift_loss(away, target, sc, rows)) == pytest.approx(float(expected), rel=1e-5)


# --- output-level forget: KL to the target -----------------------------------------------------


def test_output_kl_is_zero_when_the_output_is_the_target_and_ignores_unmasked_rows():
    z = torch.randn(5, 4)
    q = z.softmax(1)
    rows = torch.tensor([True, True, True, False, False])
    assert float(output_kl_loss(q, z + 3.0, rows)) == pytest.approx(0.0, abs=1e-6)  # softmax is shift-free
    other = torch.randn(5, 4)
    expected = F.kl_div(other.log_softmax(1)[rows], q[rows], reduction="sum") / len(q)
    assert float(output_kl_loss(q, other, rows)) == pytest.approx(float(expected), rel=1e-5)
    other[~rows] = 50.0 * torch.randn(2, 4)
    assert float(output_kl_loss(q, other, rows)) == pytest.approx(float(expected), rel=1e-5)
    assert float(output_kl_loss(q, other, rows)) > 0


# --- class-wise shift target (masked_output) ---------------------------------------------------


def test_masked_target_puts_no_mass_on_forgotten_classes_and_renormalises_the_rest():
    logits = torch.randn(50, 6)
    y = torch.randint(0, 6, (50,))
    forgotten = torch.tensor([2, 4])
    q = masked_targets(logits, y, forgotten)
    torch.testing.assert_close(q.sum(1), torch.ones(50))
    assert float(q[:, forgotten].abs().max()) == 0.0
    assert float(q[torch.arange(50), y].abs().max()) == 0.0  # nor on the sample's own class
    for i in range(50):  # the remaining classes keep the original's relative preferences
        rest = [k for k in range(6) if k not in (2, 4, int(y[i]))]
        torch.testing.assert_close(q[i, rest], logits[i, rest].softmax(0))


# --- sample-wise calibrated target -------------------------------------------------------------


def _memorised_and_holdout(n_per_class: int, c: int, seed: int = 0):
    """Forget logits of a model that memorised them (very confident) and holdout logits with
    errors, with ``n_per_class`` of each in every class."""
    g = torch.Generator().manual_seed(seed)
    y_f = torch.arange(c).repeat_interleave(n_per_class)
    logits_f = 0.1 * torch.randn(len(y_f), c, generator=g)
    logits_f[torch.arange(len(y_f)), y_f] += 8.0
    y_h = torch.arange(c).repeat_interleave(n_per_class)
    logits_h = torch.randn(len(y_h), c, generator=g)
    logits_h[torch.arange(len(y_h)), y_h] += 0.8 + 0.3 * y_h  # class k is easier as k grows
    return logits_f, y_f, logits_h, y_h


def test_calibrated_target_error_rate_per_class_equals_the_class_holdouts_without_pooling():
    c, n = 4, MIN_HOLDOUT_PER_CLASS + 10
    logits_f, y_f, logits_h, y_h = _memorised_and_holdout(n, c)
    q = calibrated_targets(logits_f, y_f, logits_h, y_h, pool=0.0)
    torch.testing.assert_close(q.sum(1), torch.ones(len(y_f)))
    wrong_q = q.argmax(1) != y_f
    wrong_h = logits_h.argmax(1) != y_h
    rates = [
        (float(wrong_q[y_f == k].float().mean()), float(wrong_h[y_h == k].float().mean())) for k in range(c)
    ]
    for target_rate, holdout_rate in rates:  # equal counts: each holdout sample is matched once
        assert target_rate == holdout_rate
    assert len({h for _, h in rates}) > 1  # the classes differ, so this is per class, not pooled


def test_calibrated_target_confidences_follow_the_holdout_quantiles_per_class_and_keep_the_rank():
    c, n = 3, MIN_HOLDOUT_PER_CLASS + 5
    logits_f, y_f, logits_h, y_h = _memorised_and_holdout(n, c, seed=1)
    q = calibrated_targets(logits_f, y_f, logits_h, y_h, pool=0.0)
    conf_t = q[torch.arange(len(y_f)), y_f]
    p_h = logits_h.softmax(1)
    conf_h = p_h[torch.arange(len(y_h)), y_h]
    ent = lambda p: -(p * p.clamp_min(1e-12).log()).sum(1)  # noqa: E731
    off = logits_f.clone()
    off[torch.arange(len(y_f)), y_f] = float("-inf")
    margin = logits_f[torch.arange(len(y_f)), y_f] - off.logsumexp(1)
    for k in range(c):
        f, h = y_f == k, y_h == k
        torch.testing.assert_close(conf_t[f].sort().values, conf_h[h].sort().values)
        torch.testing.assert_close(ent(q[f]).sort().values, ent(p_h[h]).sort().values)
        # a less confident original sample never gets a higher target confidence
        assert torch.all(conf_t[f][margin[f].argsort()].diff() >= 0)


def test_calibrated_target_places_off_class_mass_in_the_originals_order():
    logits_f, y_f, logits_h, y_h = _memorised_and_holdout(MIN_HOLDOUT_PER_CLASS, 5, seed=2)
    q = calibrated_targets(logits_f, y_f, logits_h, y_h)
    for i in range(len(y_f)):
        others = [k for k in range(5) if k != int(y_f[i])]
        by_original = sorted(others, key=lambda k: -float(logits_f[i, k]))
        assert torch.all(q[i, by_original].diff() <= 0)


def test_pooled_calibration_gives_every_class_the_whole_holdouts_quantiles():
    """pool=1 (the default): a class's targets follow the whole holdout, not its own small slice
    (measured on Fashion-MNIST: a 34-image class slice with 23.5% error, the class's test error
    17%, retrain's error on the forgotten sub-population 12.5%, mean of 3 seeds)."""
    c, n = 4, MIN_HOLDOUT_PER_CLASS + 10
    logits_f, y_f, logits_h, y_h = _memorised_and_holdout(n, c)
    q = calibrated_targets(logits_f, y_f, logits_h, y_h)  # the default: pool=1
    conf_t = q[torch.arange(len(y_f)), y_f]
    p_h = logits_h.softmax(1)
    pooled = p_h[torch.arange(len(y_h)), y_h].sort().values
    picks = ((torch.arange(n) + 0.5) / n * len(y_h) - 1).ceil().long()  # the pool's u-quantiles
    for k in range(c):
        torch.testing.assert_close(conf_t[y_f == k].sort().values, pooled[picks])
    wrong_q = q.argmax(1) != y_f
    rates = {round(float(wrong_q[y_f == k].float().mean()), 6) for k in range(c)}
    assert len(rates) == 1  # every class the pooled error rate: no class slice's own noise


def test_partial_pooling_lies_between_the_class_slice_and_the_whole_holdout():
    """A mixture's quantiles lie between its parts': with pool=0.5 each class's mean target
    confidence is between the class-slice one (pool=0) and the whole-holdout one (pool=1)."""
    c, n = 4, MIN_HOLDOUT_PER_CLASS + 40
    logits_f, y_f, logits_h, y_h = _memorised_and_holdout(n, c, seed=4)
    conf = {}
    for pool in (0.0, 0.5, 1.0):
        q = calibrated_targets(logits_f, y_f, logits_h, y_h, pool=pool)
        torch.testing.assert_close(q.sum(1), torch.ones(len(y_f)))
        conf[pool] = q[torch.arange(len(y_f)), y_f]
    for k in range(c):
        lo, hi = sorted(float(conf[p][y_f == k].mean()) for p in (0.0, 1.0))
        assert lo < hi  # the class slice differs from the whole holdout
        assert lo - 1e-3 <= float(conf[0.5][y_f == k].mean()) <= hi + 1e-3


def test_a_thin_class_holdout_falls_back_to_the_pooled_holdout():
    logits_f, y_f, logits_h, y_h = _memorised_and_holdout(MIN_HOLDOUT_PER_CLASS, 2, seed=3)
    thin = torch.cat([(y_h == 0).nonzero().squeeze(1), (y_h == 1).nonzero().squeeze(1)[:3]])
    q = calibrated_targets(logits_f, y_f, logits_h[thin], y_h[thin], pool=0.0)
    p_h = logits_h[thin].softmax(1)
    pooled_conf = p_h[torch.arange(len(thin)), y_h[thin]]
    conf_1 = q[y_f == 1, 1]
    assert float(conf_1.min()) >= float(pooled_conf.min()) - 1e-6  # drawn from the pooled holdout
    assert len(set(conf_1.tolist()) - set(p_h[y_h[thin] == 1, 1].tolist())) > 0


# --- retain sampling weights (class_anchor) ---------------------------------------------------


def test_anchor_weights_favour_the_kept_samples_of_a_forget_sub_populations_class():
    y_r = torch.arange(4).repeat_interleave(5)  # 4 classes, 5 kept samples each
    w = anchor_weights(y_r, torch.full((8,), 2), c=4, anchor=0.5)  # a sub-population of class 2
    assert w is not None
    assert w[y_r == 2].tolist() == [0.5 + 0.5 * 4] * 5 and w[y_r != 2].tolist() == [0.5] * 15
    assert float(w[y_r == 2].sum() / w.sum()) == 0.625  # 25% of the draws before, now 62.5%


def test_anchor_weights_leave_a_spread_forget_set_or_no_anchor_to_a_plain_shuffle():
    y_r = torch.arange(4).repeat_interleave(5)
    assert anchor_weights(y_r, torch.arange(4).repeat(3), c=4, anchor=0.5) is None  # even spread
    assert anchor_weights(y_r, torch.full((8,), 2), c=4, anchor=0.0) is None
    assert anchor_weights(y_r[:0], torch.full((8,), 2), c=4, anchor=0.5) is None  # nothing kept


# --- which rows get which target ---------------------------------------------------------------


def test_regime_mask():
    cw = torch.tensor([True, False, True])
    assert regime_mask(cw, "auto").tolist() == [True, False, True]
    assert regime_mask(cw, "class").tolist() == [True, True, True]
    assert regime_mask(cw, "sample").tolist() == [False, False, False]


@pytest.mark.parametrize("classwise_target", ["masked_output", "other_class_features"])
def test_output_targets_calibrate_samplewise_rows_and_mask_classwise_rows(classwise_target):
    torch.manual_seed(0)
    c = 4
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, c)).eval()
    img = lambda n: torch.randint(0, 256, (n, 1, 2, 2), dtype=torch.uint8)  # noqa: E731
    y_f = torch.tensor([0, 0, 1, 2])
    cw = torch.tensor([True, True, False, False])  # class 0 goes whole; 1 and 2 sample-wise
    data = UnlearnData(img(40), torch.randint(1, c, (40,)), img(4), y_f, cw, img(80), torch.arange(80) % c, c)
    with torch.no_grad():
        logits_f = model(data.x_forget.float() / 255)
    q = output_targets(model, data, logits_f, cw, classwise_target)
    if classwise_target == "masked_output":
        torch.testing.assert_close(q[cw], masked_targets(logits_f[cw], y_f[cw], torch.tensor([0])))
    else:
        assert float(q[cw].abs().max()) == 0.0  # their shift is at the features, not the output
    torch.testing.assert_close(q[~cw].sum(1), torch.ones(2))


# --- class-wise forget: centroid shift ---------------------------------------------------------------


def _centroid_case(keep: float):
    """Retain budget: classes 0 and 1 (4 samples each); forget: class 2 whole (3 rows) and one
    sample-wise row of class 0; the original ranks class 1 next for the class-2 rows."""
    g = torch.Generator().manual_seed(0)
    y_r = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    feats_r = [torch.randn(8, 5, generator=g) + 3 * y_r[:, None].float()]
    y_f = torch.tensor([2, 2, 2, 0])
    feats_f = [torch.randn(4, 5, generator=g) - 4]
    logits_f = torch.tensor([[0.0, 2.0, 9.0], [1.0, 3.0, 9.0], [0.5, 2.5, 9.0], [9.0, 0.0, 1.0]])
    classwise = torch.tensor([True, True, True, False])
    orig = OriginalFeatures(0, feats_r[0], feats_f[0], feats_r, [torch.ones(())], logits_f, feats_f, y_r)
    data = UnlearnData(
        torch.zeros(8, 1, 2, 2, dtype=torch.uint8), y_r, torch.zeros(4, 1, 2, 2, dtype=torch.uint8), y_f,
        classwise, torch.zeros(0, 1, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), 3,
    )  # fmt: skip
    (target,) = centroid_shift_targets(orig, data, classwise, keep)
    mu_1 = feats_r[0][y_r == 1].mean(0)
    mu_2 = feats_f[0][:3].mean(0)
    return target, feats_f[0], mu_1, mu_2


def test_centroid_shift_with_keep_1_translates_the_class_to_the_next_kept_class():
    target, h, mu_1, mu_2 = _centroid_case(keep=1.0)
    assert torch.allclose(target[:3] - h[:3], (mu_1 - mu_2).expand(3, -1), atol=1e-5)
    assert torch.allclose(target[:3].mean(0), mu_1, atol=1e-5)  # the class lands on class 1's centre
    assert torch.equal(target[3], h[3])  # a sample-wise row keeps its own features


def test_centroid_shift_keep_scales_the_deviation_and_0_collapses_onto_the_centroid():
    half, h, mu_1, mu_2 = _centroid_case(keep=0.5)
    assert torch.allclose(half[:3], mu_1 + 0.5 * (h[:3] - mu_2), atol=1e-5)
    zero, *_ = _centroid_case(keep=0.0)
    assert torch.allclose(zero[:3], mu_1.expand(3, -1), atol=1e-5)


# --- class-wise early stop on the unseen reference ---------------------------------------------------


def _outputs(losses: list[float], y: int = 0, c: int = 3) -> torch.Tensor:
    """Logits whose cross-entropy on class ``y`` is each of ``losses``, the argmax another class."""
    z = torch.zeros(len(losses), c)
    z[:, (y + 1) % c] = 20.0  # every row predicted as another class
    z[:, y] = 20.0 - torch.tensor(losses)  # loss ~= 20 - z_y = the given value (the third logit ~0)
    return z


def test_the_stop_rule_waits_until_the_forget_samples_look_like_the_unseen_ones():
    ref = torch.tensor([False] * 4 + [True] * 4)
    y = torch.zeros(8, dtype=torch.long)
    under = _outputs([1, 1, 1, 1, 3, 3, 3, 3])  # the forget samples still fit better than unseen
    assert not forgotten_like(under, y, ref)
    level = _outputs([3, 3, 4, 4, 3, 3, 3, 3])  # their median loss reached the unseen one's
    assert forgotten_like(level, y, ref)
    recognised = level.clone()
    recognised[7] = torch.tensor([30.0, 0.0, 0.0])  # an unseen sample still predicted as its class
    assert not forgotten_like(recognised, y, ref)
    recognised = level.clone()
    recognised[0] = torch.tensor([30.0, 0.0, 0.0])  # a trained sample still predicted as its class
    assert not forgotten_like(recognised, y, ref)


def test_without_a_reference_the_stop_rule_waits_until_no_forget_sample_is_recognised():
    y = torch.zeros(4, dtype=torch.long)
    forgotten = _outputs([3, 3, 5, 1])  # every row predicted as another class, whatever its loss
    assert forgotten_like(forgotten, y, None)
    forgotten[2] = torch.tensor([30.0, 0.0, 0.0])  # one training sample of the class still recognised
    assert not forgotten_like(forgotten, y, None)


def test_the_unseen_reference_only_for_all_class_wise_requests_with_enough_samples():
    x = torch.zeros(30, 1, 2, 2, dtype=torch.uint8)
    y = torch.zeros(30, dtype=torch.long)
    unseen = torch.arange(30) < 12
    data = UnlearnData(x, y, x, y, torch.ones(30, dtype=torch.bool), x, y, 3, forget_unseen=unseen)
    assert torch.equal(unseen_reference(data, data.forget_classwise), unseen)
    mixed = data.forget_classwise.clone()
    mixed[-1] = False  # one sample-wise row: no early stop (its calibration needs every epoch)
    assert unseen_reference(data, mixed) is None
    few = UnlearnData(x, y, x, y, data.forget_classwise, x, y, 3, forget_unseen=torch.arange(30) < 9)
    assert unseen_reference(few, few.forget_classwise) is None
    assert (
        unseen_reference(UnlearnData(x, y, x, y, data.forget_classwise, x, y, 3), data.forget_classwise)
        is None
    )


def test_nearest_retain_marks_the_share_of_the_budget_closest_to_the_forget_set():
    from rfau.methods.rfau.losses import nearest_retain

    retain = torch.tensor([[0.0], [10.0], [1.0], [20.0], [9.0]])
    forget = torch.tensor([[0.5], [10.0]])
    assert nearest_retain(retain, forget, 0.2).tolist() == [False, True, False, False, False]
    near = nearest_retain(retain, forget, 0.6)
    assert near.tolist() == [True, True, True, False, False]  # 0.5, 0, 0.5 away; 9 is 1 away
    assert not nearest_retain(retain, forget, 0.0).any()
