"""RFAU's indistinguishability settings on hand-made tensors: the per-class target, the class-mean
sample-wise target, the KS stop, the selection statistic and the adapter snapshots."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rfau.methods.rfau import (
    Snapshots,
    class_mean_targets,
    class_prior_targets,
    forgotten_like,
    histogram_weights,
    ks_critical,
    ks_distance,
    unseen_distance,
)


def test_class_prior_gives_every_image_of_a_class_one_target_with_no_mass_on_forgotten_classes():
    logits = torch.tensor([[5.0, 2.0, 0.0, 1.0], [9.0, 0.0, 3.0, 1.0], [0.0, 4.0, 1.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    q = class_prior_targets(logits, y, torch.tensor([0, 1]))
    assert torch.allclose(q[0], q[1])  # trained and unseen images of a class: the same target
    assert torch.all(q[:, :2] == 0)
    assert torch.allclose(q.sum(1), torch.ones(3))
    # the mean of the two rows' renormalised masked outputs
    p = torch.stack([torch.tensor([0.0, 1.0]).softmax(0), torch.tensor([3.0, 1.0]).softmax(0)]).mean(0)
    assert torch.allclose(q[0, 2:], p)


def test_class_prior_tilt_moves_mass_toward_the_most_confused_class():
    logits = torch.tensor([[5.0, 2.0, 1.0, 0.0]])
    y = torch.tensor([0])
    flat = class_prior_targets(logits, y, torch.tensor([0]), tilt=1.0)
    tilted = class_prior_targets(logits, y, torch.tensor([0]), tilt=2.0)
    assert tilted[0, 1] > flat[0, 1]  # class 1 is the one the original confuses class 0 with
    assert tilted[0, 3] < flat[0, 3]
    assert math.isclose(float(tilted.sum()), 1.0, rel_tol=1e-6)


def test_class_mean_target_is_the_holdout_mean_output_of_the_samples_class():
    logits_h = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    y_h = torch.tensor([0, 0, 1])
    q = class_mean_targets(torch.tensor([0, 1, 2]), logits_h, y_h, 3)
    assert torch.allclose(q[0], logits_h[:2].softmax(1).mean(0))
    assert torch.allclose(q[1], logits_h[2].softmax(0))
    assert torch.allclose(q[2], logits_h.softmax(1).mean(0))  # no holdout image of class 2: pooled


def test_ks_distance_of_identical_samples_is_zero_and_of_disjoint_ones_is_one():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert ks_distance(a, a.clone()) == pytest.approx(0.0)
    assert ks_distance(a, a + 10) == pytest.approx(1.0)
    assert ks_distance(a, a + 0.5) == pytest.approx(0.25)
    assert ks_distance(a, a + 1.5) == pytest.approx(0.5)


def test_ks_distance_weights_the_reference():
    a = torch.tensor([0.0, 0.0])
    b = torch.tensor([0.0, 5.0])
    assert ks_distance(a, b) == pytest.approx(0.5)
    assert ks_distance(a, b, torch.tensor([1.0, 0.0])) == pytest.approx(0.0)
    assert ks_distance(a, b, torch.tensor([0.0, 0.0])) == 1.0  # nothing to compare with


def test_ks_critical_shrinks_with_sample_size():
    assert ks_critical(30, 30, 0.05) == pytest.approx(1.358 * math.sqrt(60 / 900), rel=1e-3)
    assert ks_critical(300, 300, 0.05) < ks_critical(30, 30, 0.05)


def test_histogram_weights_give_the_reference_the_forget_sets_class_mix():
    y_ref = torch.tensor([0, 0, 0, 1])
    w = histogram_weights(y_ref, torch.tensor([0, 1]), 3)
    share = torch.stack([w[y_ref == k].sum() for k in range(2)]) / w.sum()
    assert torch.allclose(share, torch.tensor([0.5, 0.5]))


def _rows(loss_trained: list[float], loss_unseen: list[float]) -> tuple[torch.Tensor, ...]:
    """Two-class logits whose true class 0 loses exactly the given cross-entropy, never predicted."""
    loss = torch.tensor(loss_trained + loss_unseen)
    # p0 = exp(-loss) with logits (0, z): p0 = 1 / (1 + e^z), z = log(e^loss - 1)
    logits = torch.stack([torch.zeros_like(loss), torch.log(torch.expm1(loss))], 1)
    ref = torch.tensor([False] * len(loss_trained) + [True] * len(loss_unseen))
    return logits, torch.zeros(len(loss), dtype=torch.long), ref


def test_the_ks_stop_passes_overlapping_losses_the_median_rule_still_waits_on():
    trained = [2.0 + 0.1 * i for i in range(30)]
    unseen = [2.1 + 0.1 * i for i in range(30)]  # a shade higher: the median rule waits
    logits, y, ref = _rows(trained, unseen)
    assert not forgotten_like(logits, y, ref, "median")
    assert forgotten_like(logits, y, ref, "ks", 0.05)
    far = [4.0 + 0.1 * i for i in range(30)]
    logits, y, ref = _rows(trained, far)
    assert not forgotten_like(logits, y, ref, "ks", 0.05)  # clearly apart: keep training


def test_the_ks_stop_still_waits_while_a_forget_sample_is_recognised():
    logits, y, ref = _rows([2.0] * 20, [2.0] * 20)
    logits[0] = torch.tensor([5.0, 0.0])
    assert not forgotten_like(logits, y, ref, "ks", 0.05)


def test_unseen_distance_adds_the_share_still_recognised():
    a = torch.tensor([1.0, 2.0])
    assert unseen_distance(a, a.clone()) == pytest.approx(0.0)
    assert unseen_distance(a, a.clone(), recognised=0.5) == pytest.approx(0.5)


def test_snapshots_restore_the_closest_epoch_and_stop_after_patience():
    model = nn.Linear(2, 1)
    snaps = Snapshots(patience=2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    assert not snaps.offer(model, 0, 0.5)
    with torch.no_grad():
        model.weight.fill_(2.0)
    assert not snaps.offer(model, 1, 0.2)  # the closest
    with torch.no_grad():
        model.weight.fill_(3.0)
    assert not snaps.offer(model, 2, 0.4)
    assert snaps.offer(model, 3, 0.3)  # two epochs without a closer one
    snaps.restore(model)
    assert snaps.best_epoch == 1
    assert torch.all(model.weight == 2.0)
    assert snaps.trace == [0.5, 0.2, 0.4, 0.3]


def test_unseen_loss_targets_give_trained_rows_the_unseen_quantile_of_their_rank():
    from rfau.methods.rfau import unseen_loss_targets

    loss = torch.tensor([0.1, 0.3, 0.2, 5.0, 1.0, 3.0, 9.0])
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1])
    ref = torch.tensor([False, False, False, True, True, True, False])
    t = unseen_loss_targets(loss, y, ref)
    assert t[:3].tolist() == [1.0, 5.0, 3.0]  # lowest trained loss -> lowest unseen loss, ...
    assert torch.isnan(t[3:]).all()  # reference rows, and a class without a reference


def test_loss_match_loss_is_zero_at_the_target_and_ignores_rows_without_one():
    from rfau.methods.rfau.losses import loss_match_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, y, reduction="none")
    assert float(loss_match_loss(logits, y, torch.stack([ce[0], torch.tensor(float("nan"))]))) == 0.0
    assert float(loss_match_loss(logits, y, ce + 1.0)) == pytest.approx(1.0)


def test_unseen_loss_targets_leave_out_reference_rows_still_recognised():
    from rfau.methods.rfau import unseen_loss_targets

    loss = torch.tensor([0.1, 0.2, 0.05, 4.0])
    y = torch.zeros(4, dtype=torch.long)
    ref = torch.tensor([False, False, True, True])
    recognised = torch.tensor([True, True, True, False])  # the reference's 0.05 is still recognised
    assert unseen_loss_targets(loss, y, ref, recognised)[:2].tolist() == [4.0, 4.0]
    assert unseen_loss_targets(loss, y, ref)[:2].tolist() == pytest.approx([0.05, 4.0])


def test_split_reference_halves_each_class_and_leaves_trained_rows_out():
    from rfau.methods.rfau.targets import split_reference

    y = torch.tensor([0] * 7 + [1] * 4 + [2] * 3)
    ref = torch.tensor([False, True, True, True, True, True, False] + [True] * 4 + [False] * 3)
    half = split_reference(ref, y, torch.Generator().manual_seed(0))
    assert not bool((half & ~ref).any())  # only reference rows
    assert int((half & (y == 0)).sum()) == 2  # 5 reference rows: 2 here, 3 to the stop
    assert int((half & (y == 1)).sum()) == 2
    assert int((half & (y == 2)).sum()) == 0  # no reference rows in class 2
    other = split_reference(ref, y, torch.Generator().manual_seed(1))
    assert int(other.sum()) == int(half.sum())  # another draw, the same sizes


def test_unseen_loss_targets_read_only_the_fit_half_of_the_reference():
    from rfau.methods.rfau import unseen_loss_targets

    loss = torch.tensor([0.1, 0.2, 3.0, 3.0, 9.0, 9.0])
    y = torch.zeros(6, dtype=torch.long)
    ref = torch.tensor([False, False, True, True, True, True])
    fit = torch.tensor([False, False, True, True, False, False])
    assert unseen_loss_targets(loss, y, ref, None, fit)[:2].tolist() == [3.0, 3.0]
    assert unseen_loss_targets(loss, y, ref)[:2].tolist() == [3.0, 9.0]
    assert torch.isnan(unseen_loss_targets(loss, y, ref, None, fit)[2:]).all()  # no target on any half


def test_forgotten_like_compares_the_given_trained_rows_with_the_stop_half():
    y = torch.zeros(6, dtype=torch.long)
    # class 0 is never predicted; cross-entropy grows as the logit of class 0 falls
    logits = torch.tensor([[-k, 0.0] for k in (4.0, 4.0, 0.5, 0.5, 4.0, 4.0)])
    trained = torch.tensor([True, True, False, False, False, False])
    stop_half = torch.tensor([False, False, False, False, True, True])
    fit_half = torch.tensor([False, False, True, True, False, False])
    assert forgotten_like(logits, y, stop_half, "median", 0.05, trained)  # as far as the stop half
    # the default reads every other row as trained: the fit half (low loss) drags the median down
    assert not forgotten_like(logits, y, stop_half)
    assert forgotten_like(logits, y, fit_half, "median", 0.05, trained)
