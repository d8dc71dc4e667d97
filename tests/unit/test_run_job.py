"""`rfau run` (rfau.job.run_job) is a batch on a throwaway store and registry of its own, with the
batch's parameters: the given original becomes the bootstrap champion of that registry, the
batch unlearns from it, and the user's registry and request store are never touched."""

from __future__ import annotations

import json

import pytest

from rfau.data.request_store import RequestState, RequestStore
from rfau.job import run_job
from rfau.models.checkpoint import read_card
from rfau.records import GateReport
from tests.support.cli import run_cli

TINY = {"epochs": 2, "retain_budget": 200}  # RFAU settings: the plumbing, not the quality


def test_run_job_without_tracking_is_a_batch_from_the_given_original(tmp_path, monkeypatch, digits_original):
    user_state, user_store = tmp_path / "user-state", tmp_path / "user-store"
    monkeypatch.setenv("RFAU_STATE_DIR", str(user_state))
    monkeypatch.setenv("RFAU_REQUEST_STORE", str(user_store))
    wd = tmp_path / "w"
    summary = run_job(
        "digits",
        wd,
        scenario="class",
        model_dir=digits_original / "model",
        rfau_config=TINY,
        retrain=False,
        track=False,
    )
    assert set(summary.methods) == {"original", "rfau"} and summary.registry is None
    assert summary.forget_classes == ["3"] and summary.forget == summary.methods["rfau"].counts.forget
    # the batch started from the given original (fetched back from the run's own registry)
    base = read_card(wd / "batch" / "batch" / "base")
    assert base.weights_sha256 == read_card(digits_original / "model").weights_sha256
    assert read_card(wd / "rfau").lineage["parent_weights_sha256"] == base.weights_sha256
    assert json.loads((wd / "summary.json").read_text())["registry"] is None
    # untracked: the run's registry is gone; the user's state and store were never made
    assert not (wd / "state").exists() and not user_state.exists() and not user_store.exists()
    # its own request store holds the demo request, settled behind the gates as by any batch
    passed = GateReport.read(wd / "batch" / "evaluation" / "gates.json").passed
    (st,) = RequestStore.from_uri(wd / "store").list()
    assert st.state is (RequestState.FULFILLED if passed else RequestState.PENDING), st.detail


@pytest.mark.e2e
def test_main_job_end_to_end(tmp_path, digits_original):
    # the original is given (training one is covered by the stage-by-stage test and the batches)
    args = ["run", "--workdir", str(tmp_path / "w"), "--model", str(digits_original / "model")]
    args += [f"--set={k}={v}" for k, v in TINY.items()]  # the command's plumbing, not RFAU's quality
    res = run_cli(*args, RFAU_STATE_DIR=str(tmp_path / "state"))
    assert res.returncode == 0, res.stderr
    for method in ("original", "rfau", "retrain"):
        assert method in res.stdout
    for col in ("UA", "RA", "TA", "MIA conf."):
        assert col in res.stdout
    assert "RFAU trains" in res.stdout
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert set(summary["methods"]) == {"original", "rfau", "retrain"}
    assert summary["rfau_trainable_share"] <= 0.05
    assert (tmp_path / "w" / "rfau" / "adapter" / "adapter_model.safetensors").is_file()
    assert "registry: rfau-model version" in res.stdout
    assert summary["registry"]["original_version"] >= 1
