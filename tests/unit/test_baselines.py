"""The baseline unlearning methods through the method interface, on a tiny synthetic task."""

from __future__ import annotations

import copy
import os
from dataclasses import replace

import pytest
import torch

from rfau.config import TrainConfig
from rfau.errors import RfauError
from rfau.methods import METHODS, RunOptions, UnlearnData, get_method, run_method
from rfau.methods.sgd import other_labels
from rfau.models.arch import SmallCNN
from rfau.stages import method_config
from rfau.train import predict_logits, train_model

os.environ.setdefault("RFAU_QUIET", "1")

BASELINES = ("finetune", "neggrad_plus", "random_label", "scrub", "salun", "ssd")
# few, small steps so the whole file stays fast on two CPU cores
FAST = {
    "finetune": {"epochs": 1, "batch_size": 32, "augment_pad": 1, "augment_flip": False},
    "neggrad_plus": {"epochs": 1, "batch_size": 32, "forget_batch_size": 16, "augment_pad": 1},
    "random_label": {"epochs": 1, "batch_size": 32},
    "scrub": {"epochs": 2, "msteps": 1, "batch_size": 32, "forget_batch_size": 16, "lr": 0.01},
    "salun": {"epochs": 1, "batch_size": 32, "mask_batch_size": 32},
    "ssd": {"batch_size": 32},
    "rfau": {"epochs": 2, "retain_budget": 100, "batch_size": 32, "forget_batch_size": 16},
    "retrain": {"epochs": 1, "batch_size": 32, "augment_pad": 1, "augment_flip": False},
}
CLASSES = 4


def _synthetic(n_per_class: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    protos = torch.rand(CLASSES, 1, 8, 8, generator=gen) * 255
    y = torch.arange(CLASSES).repeat_interleave(n_per_class)
    x = (protos[y] + 60 * torch.randn(len(y), 1, 8, 8, generator=gen)).clamp(0, 255).to(torch.uint8)
    return x, y


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    x, y = _synthetic(60, gen)
    xh, yh = _synthetic(10, gen)
    torch.manual_seed(0)
    model = SmallCNN(1, CLASSES, width=8)
    cfg = TrainConfig(
        epochs=8,
        batch_size=32,
        optimizer="adam",
        lr=3e-3,
        weight_decay=0.0,
        augment_pad=1,
        augment_flip=False,
        device="cpu",
    )
    model = train_model(model, x, y, cfg)
    # forget: all of class 0 (class-wise) plus five samples of class 1 (sample-wise)
    forget = (y == 0) | (torch.arange(len(y)) % 60 < 5) & (y == 1)
    data = UnlearnData(
        x_retain=x[~forget],
        y_retain=y[~forget],
        x_forget=x[forget],
        y_forget=y[forget],
        forget_classwise=y[forget] == 0,
        x_holdout=xh,
        y_holdout=yh,
        num_classes=CLASSES,
    )
    return model, data


def _run(name: str, model, data, seed: int = 0):
    cfg = get_method(name).config(**FAST[name], seed=seed, device="cpu")
    return run_method(name, model, data, cfg)


def test_all_baselines_are_registered_with_configs():
    for name in BASELINES:
        method = METHODS[name]
        assert method.config is not None and method.summary
        method.config()  # the documented defaults validate


@pytest.mark.parametrize("name", BASELINES)
def test_method_changes_the_copy_not_the_input(name, setup):
    model, data = setup
    before = copy.deepcopy(model.state_dict())
    res = _run(name, model, data)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} modified the input model ({k})"
    assert res.model is not model and not res.model.training
    assert 0 < res.trainable_params <= res.total_params
    assert res.seconds >= 0
    diff = (predict_logits(res.model, data.x_forget) - predict_logits(model, data.x_forget)).abs().max()
    assert diff > 1e-4, f"{name} returned the original model's outputs"


@pytest.mark.parametrize("name", BASELINES)
def test_method_is_deterministic_for_a_seed(name, setup):
    model, data = setup
    a, b = _run(name, model, data, seed=3), _run(name, model, data, seed=3)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), f"{name} differs between two runs with one seed ({k})"


@pytest.mark.parametrize("name", BASELINES)
def test_config_rejects_unknown_and_invalid_settings(name):
    with pytest.raises(RfauError, match="invalid settings"):
        method_config(name, {"no_such_setting": 1}, None, None)
    bad = {"alpha": -1.0} if name == "ssd" else {"epochs": 0}
    with pytest.raises(RfauError):
        method_config(name, bad, None, None)
    assert method_config(name, {"seed": 5}, None, None).seed == 5


def test_original_is_returned_unchanged(setup):
    model, data = setup
    res = run_method("original", model, data)
    assert res.model is model and res.trainable_params == 0


def test_ssd_only_dampens_and_counts_what_it_dampened(setup):
    model, data = setup
    res = _run("ssd", model, data)
    changed = 0
    for p0, p1 in zip(model.parameters(), res.model.parameters()):
        assert torch.all(p1.abs() <= p0.abs() + 1e-7)  # beta <= 1: no weight grows
        assert torch.all(p1 * p0 >= 0)  # and none flips sign
        changed += int((p0 != p1).sum())
    assert 0 < changed <= res.trainable_params


def test_salun_updates_only_salient_weights(setup):
    model, data = setup
    res = _run("salun", model, data)
    total = res.total_params
    assert abs(res.trainable_params - total // 2) <= 1  # mask_ratio 0.5
    changed = sum(int((p0 != p1).sum()) for p0, p1 in zip(model.parameters(), res.model.parameters()))
    assert 0 < changed <= res.trainable_params


def test_random_labels_are_always_wrong():
    y = torch.arange(10).repeat(50)
    z = other_labels(y, 10, torch.Generator().manual_seed(0))
    assert not torch.any(z == y) and z.min() >= 0 and z.max() < 10
    assert len(z.unique()) == 10


def test_neggrad_ascent_is_bounded(setup):
    model, data = setup
    # a forget weight of 0.5 at a high lr diverges to NaN within three epochs without the cap
    cfg = get_method("neggrad_plus").config(
        **{**FAST["neggrad_plus"], "alpha": 0.5, "lr": 0.05, "epochs": 3}, device="cpu"
    )
    res = run_method("neggrad_plus", model, data, cfg)
    assert torch.isfinite(predict_logits(res.model, data.x_retain)).all()
    assert all(h["forget_loss"] < 50 for h in res.info.history)  # no runaway forget CE


@pytest.mark.parametrize("name", [*BASELINES, "rfau", "retrain", "original"])
def test_the_callers_model_is_never_changed(name, setup):
    """Weights, module structure (no adapters injected), device, mode and trainable flags."""
    model, data = setup
    model.eval()
    before = copy.deepcopy(model.state_dict())
    modules = [(n, type(m)) for n, m in model.named_modules()]
    grads = [p.requires_grad for p in model.parameters()]
    cfg = get_method(name).config(**FAST[name], device="cpu") if name != "original" else None
    run_method(name, model, data, cfg)
    assert [(n, type(m)) for n, m in model.named_modules()] == modules
    assert model.state_dict().keys() == before.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} modified the input model ({k})"
    assert not model.training and [p.requires_grad for p in model.parameters()] == grads


def test_runner_reports_each_epoch_and_validates_settings_given_as_a_dict(setup):
    model, data = setup
    rows = []
    res = run_method(
        "finetune",
        model,
        data,
        {**FAST["finetune"], "epochs": 2, "device": "cpu"},
        RunOptions(on_epoch=rows.append),
    )
    assert rows == res.info.history and [r["epoch"] for r in rows] == [0, 1]
    with pytest.raises(RfauError, match="invalid settings for method 'finetune': epochs"):
        run_method("finetune", model, data, {"epochs": 0})


def test_a_diverging_run_stops_with_a_clear_error(setup):
    model, data = setup
    for name, settings in (("rfau", {"lr": 1e30}), ("finetune", {"lr": 1e30})):
        with pytest.raises(RfauError, match=f"{name} (diverged|produced inf/NaN)"):
            run_method(name, model, data, {**FAST[name], **settings, "device": "cpu"})


def test_an_empty_forget_set_and_a_bad_device_are_refused(setup):
    model, data = setup
    empty = replace(
        data,
        x_forget=data.x_forget[:0],
        y_forget=data.y_forget[:0],
        forget_classwise=data.forget_classwise[:0],
    )
    with pytest.raises(RfauError, match="nothing to forget"):
        run_method("finetune", model, empty, FAST["finetune"])
    with pytest.raises(RfauError, match="unknown device 'gpu0'"):
        run_method("finetune", model, data, {**FAST["finetune"], "device": "gpu0"})
    with pytest.raises(RfauError, match="forget has 3 entries but 2 labels"):
        replace(
            data,
            x_forget=data.x_forget[:3],
            y_forget=data.y_forget[:2],
            forget_classwise=data.forget_classwise[:2],
        )
