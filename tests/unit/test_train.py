"""Training batches: every image once an epoch, in batches of near-equal size; inference batches
that change the speed, never the outputs."""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from rfau.models.arch import build_model
from rfau.train import even_batches, inference_batch, predict_logits


@given(n=st.integers(1, 5000), batch_size=st.integers(1, 600))
def test_even_batches_cover_every_index_once_in_near_equal_batches(n, batch_size):
    perm = torch.randperm(n)
    batches = even_batches(perm, batch_size)
    sizes = [len(b) for b in batches]
    assert len(batches) == math.ceil(n / batch_size)  # as many steps as plain slicing
    assert max(sizes) <= batch_size and max(sizes) - min(sizes) <= 1
    assert torch.equal(torch.cat(batches), perm)  # each index once, order kept


def test_the_class_scenario_that_left_a_two_image_batch_now_gets_none():
    """Fashion-MNIST's class scenario retains 2,434 images: at batch 128 plain slicing left a last
    batch of 2 (BatchNorm on 2 samples at peak lr), and the retrain underfit (train accuracy 86%)."""
    sizes = {len(b) for b in even_batches(torch.arange(2434), 128)}
    assert sizes == {122, 121}  # 20 steps, as before


def test_the_inference_batch_changes_no_output():
    """The CPU default (128 rows) cuts 300 images unevenly; the logits equal one whole batch's
    (BatchNorm in eval mode: each row's output depends on that row alone)."""
    torch.manual_seed(0)
    model = build_model("resnet18", 1, 10, width=4)
    x = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    assert inference_batch(torch.device("cpu")) < len(x)
    torch.testing.assert_close(predict_logits(model, x), predict_logits(model, x, batch_size=len(x)))
