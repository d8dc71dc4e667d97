"""Metrics on cases whose answers are known."""

from __future__ import annotations

import math
import time

import psutil
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rfau.metrics import accuracy, avg_gap
from rfau.metrics.distance import activation_distance, js_divergence, loss_threshold_mia
from rfau.metrics.efficiency import measure
from rfau.metrics.mia import mia_efficacy


def test_retrain_against_itself_has_zero_gap():
    m = {"ua": 9.7, "ra": 98.9, "ta": 89.7, "mia_confidence": 17.4}
    assert avg_gap(m, m) == 0.0
    assert avg_gap({**m, "ua": 13.7}, m) == 1.0  # one metric 4 points off -> mean 1


@given(st.lists(st.floats(-10, 10), min_size=4, max_size=4))
@settings(max_examples=30, deadline=None)
def test_js_divergence_is_symmetric_bounded_and_zero_on_itself(vals):
    a = torch.tensor([vals])
    b = torch.tensor([vals[::-1]])
    assert js_divergence(a, a) < 1e-9
    assert abs(js_divergence(a, b) - js_divergence(b, a)) < 1e-6
    assert 0.0 <= js_divergence(a, b) <= math.log(2) + 1e-6


def test_js_divergence_of_hand_built_outputs():
    # disjoint one-hot outputs -> ln 2; p=(1/2,1/2) vs one-hot (1,0) -> known closed form
    big = 50.0
    onehot0 = torch.tensor([[big, 0.0]])
    onehot1 = torch.tensor([[0.0, big]])
    assert abs(js_divergence(onehot0, onehot1) - math.log(2)) < 1e-6
    half = torch.tensor([[0.0, 0.0]])
    m = torch.tensor([0.75, 0.25])
    expected = 0.5 * math.log(1 / 0.75) + 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert abs(js_divergence(onehot0, half) - expected) < 1e-6
    assert m.sum() == 1
    assert abs(activation_distance(onehot0, onehot1) - math.sqrt(2)) < 1e-6


def _synthetic(n: int, seed: int):
    """Members get confident outputs, non-members less so; a never-seen set looks like non-members."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)

    def logits(margin_mean: float) -> torch.Tensor:
        z = torch.randn(n, 10, generator=g)
        z[torch.arange(n), y] += margin_mean + torch.randn(n, generator=g)
        return z

    return y, logits


def test_mia_efficacy_near_the_test_sets_own_share_for_unseen_data():
    y, logits = _synthetic(600, 0)
    l_ret, l_test, l_unseen, l_member = logits(6.0), logits(2.0), logits(2.0), logits(6.0)
    # an attack applied to the test set itself gives its own share; unseen data must score near it
    own = mia_efficacy(l_ret, y, l_test, y, l_test, y)
    unseen = mia_efficacy(l_ret, y, l_test, y, l_unseen, y)
    member = mia_efficacy(l_ret, y, l_test, y, l_member, y)
    assert abs(unseen - own) < 8
    assert member < 25 < unseen
    for kind in ("confidence", "entropy"):
        assert 0 <= mia_efficacy(l_ret, y, l_test, y, l_unseen, y, kind=kind) <= 100


def test_loss_threshold_attack_separates_members_from_unseen():
    y, logits = _synthetic(600, 1)
    l_ret, l_test = logits(6.0), logits(1.0)
    assert loss_threshold_mia(l_ret, y, l_test, y, logits(1.0), y) > 70
    assert loss_threshold_mia(l_ret, y, l_test, y, logits(6.0), y) < 30


def test_accuracy():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(100 * 2 / 3)


def test_measure_samples_the_peak_of_memory_held_only_inside_the_step():
    before = psutil.Process().memory_info().rss / 2**20
    with measure(interval=0.005) as cost:
        work = torch.ones(128 * 2**18)  # 128 MB allocated and written inside the step
        time.sleep(0.1)  # several samples while it is held
        del work
    assert cost["peak_rss_mb"] >= before + 100, cost  # the transient 128 MB was seen
    assert cost["seconds"] >= 0.1
    if not torch.cuda.is_available():
        assert cost["peak_cuda_mb"] is None and cost["cuda_rise_mb"] is None
