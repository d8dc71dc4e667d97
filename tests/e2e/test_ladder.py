"""The escalation ladder, deadlines and fair scheduling: every deletion completes. A batch climbs
its rungs (RFAU, then the exact `retrain`) from one base and split until one passes the gates;
a request due soon, or one that failed `max_attempts` batches, goes straight to the exact rung; a
model without a recipe to retrain sends its requests to `needs-retrain`, never round in circles."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rfau.audit.trail import AuditTrail
from rfau.batch import run_batch
from rfau.data.deadlines import failed_batches
from rfau.data.request_store import RequestState, RequestStore
from rfau.gates import Gates
from rfau.params import BatchParams
from rfau.tracking.settings import TrackingSettings
from tests.support.cli import run_cli

pytestmark = pytest.mark.e2e

# an RFAU rung too weak to forget (its gates fail), and a quick exact rung; the gates loosened
# where a 3-epoch retrain is less accurate than the 40-epoch original
WEAK_RFAU = {"method": "rfau", "config": {"epochs": 1, "lr": 1e-7, "retain_budget": 200}}
QUICK_RETRAIN = {"method": "retrain", "config": {"epochs": 3}}
LOOSE = Gates(max_retain_drop=100, max_test_drop=100, max_probe_forgotten_class_acc=100)
RECEIVED = "2026-11-27T10:00:00Z"


def _queue(root: Path, store: str, rid: str, received: str = RECEIVED, **fields) -> None:
    body = {"request_id": rid, "reason": "GDPR art. 17", "received_at": received, "subject": rid, **fields}
    if "sample_ids" not in body:
        body["classes"] = ["3"]
    (root / f"{rid}.json").write_text(json.dumps(body))
    RequestStore.from_uri(store).add([root / f"{rid}.json"])


def _params(store: str, **kw) -> BatchParams:
    # received long ago: far past a 30-day deadline; deadline_days keeps it from forcing the exact rung
    base = {"store": store, "escalation": [WEAK_RFAU, QUICK_RETRAIN], "gates": LOOSE, "deadline_days": 3650}
    return BatchParams.model_validate({**base, **kw})


def _records(store: str, settings: TrackingSettings) -> list[dict]:
    return AuditTrail.open(store, settings).records()


def test_a_class_request_rfau_cannot_certify_is_fulfilled_in_one_batch_by_retrain(tmp_path, seed_state):
    settings = seed_state(tmp_path / ".rfau")
    store = str(tmp_path / ".rfau" / "store")
    _queue(tmp_path, store, "c3")
    res = run_batch(tmp_path / "w", _params(store), settings)
    assert res.registered is not None and res.registered.promoted, res
    assert RequestStore.from_uri(store).get("c3").state is RequestState.FULFILLED
    (record,) = _records(store, settings)
    assert [(a["rung"], a["method"], a["gates_passed"]) for a in record["attempts"]] == [
        (1, "rfau", False),
        (2, "retrain", True),
    ]
    first, second = record["attempts"]
    assert first["failed_gates"] and first["why"] and second["why"] == "" and second["failed_gates"] == []
    assert first["config"]["lr"] == 1e-7 and second["config"]["epochs"] == 3 and first["seconds"] > 0
    assert record["exact"] is True and record["method"] == "retrain"
    assert record["deadlines"]["c3"]["met"] is True and record["deadlines"]["c3"]["due"].startswith("2036-")
    with contextlib.chdir(tmp_path):
        verify = run_cli("audit", "verify", "--no-weights", RFAU_STATE_DIR=str(tmp_path / ".rfau"))
        listed = run_cli("request", "list", "--json", RFAU_STATE_DIR=str(tmp_path / ".rfau"))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    (row,) = json.loads(listed.stdout)
    assert row["state"] == "fulfilled" and [a["method"] for a in row["attempts"]] == ["rfau", "retrain"]
    # one MLflow child run per rung under the batch's run
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / '.rfau' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = record["mlflow_run_id"]
    run = client.get_run(parent)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    names = sorted(c.info.run_name for c in children)
    assert "rung 1: rfau" in names and "rung 2: retrain" in names, names


def test_a_request_due_within_the_lead_goes_straight_to_retrain(tmp_path, seed_state):
    settings = seed_state(tmp_path / ".rfau")
    store = str(tmp_path / ".rfau" / "store")
    received = (datetime.now(UTC) - timedelta(days=28)).isoformat()  # due in 2 days (30-day deadline)
    _queue(tmp_path, store, "soon", received, sample_ids=[f"digits/{i}" for i in range(1, 40) if i % 5])
    res = run_batch(tmp_path / "w", _params(store, deadline_days=30), settings)
    assert res.registered is not None
    (record,) = _records(store, settings)
    assert [(a["rung"], a["method"]) for a in record["attempts"]] == [(2, "retrain")]
    assert not (tmp_path / "w" / "rung-2").exists()  # one rung tried, no RFAU model made


def test_an_imported_model_has_no_recipe_to_retrain(tmp_path):
    """An imported Hugging Face image model records no training recipe: the exact rung refuses it."""
    from rfau.batch.ladder import retrain_refusal
    from rfau.data.datasets import load_dataset
    from rfau.models.importer import import_model
    from tests.support.builders import save_vit

    digits = load_dataset("digits")
    card = import_model(
        save_vit(tmp_path / "vit", list(digits.classes)), "hf-image", digits, tmp_path / "model"
    )
    assert "train_config" not in card.lineage
    why = retrain_refusal(card)
    assert why and "cannot be retrained" in why and "hf-image" in why


def test_a_model_without_a_recipe_ends_in_needs_retrain(tmp_path, seed_state, monkeypatch):
    """The base model's family cannot be retrained (as an imported model: no recipe rfau can
    rerun): the retrain rung is refused, and when RFAU fails the request waits in `needs-retrain`
    with the reason instead of going round again; an operator can re-queue it."""
    from rfau.models.families import get_family

    settings = seed_state(tmp_path / ".rfau")
    store = str(tmp_path / ".rfau" / "store")
    # the seeded champion stands for an imported model: its family refuses retrain, as hf-image's does
    why = "it was imported without a training recipe"
    monkeypatch.setitem(type(get_family("rfau")).unsupported, "retrain", why)
    _queue(tmp_path, store, "imp")
    res = run_batch(tmp_path / "w", _params(store), settings)
    assert res.registered is not None and not res.registered.promoted
    st = RequestStore.from_uri(store).get("imp")
    assert st.state is RequestState.NEEDS_RETRAIN, st
    assert "cannot be retrained" in st.detail and why in st.detail
    (record,) = _records(store, settings)
    assert [a["method"] for a in record["attempts"]] == ["rfau"]  # retrain never started
    with contextlib.chdir(tmp_path):
        listed = run_cli("request", "list", "--json", RFAU_STATE_DIR=str(tmp_path / ".rfau"))
        again = run_cli("request", "requeue", "imp", RFAU_STATE_DIR=str(tmp_path / ".rfau"))
    assert json.loads(listed.stdout)[0]["state"] == "needs-retrain"
    assert again.returncode == 0, again.stderr
    assert RequestStore.from_uri(store).get("imp").state is RequestState.PENDING


def test_no_request_loops_past_max_attempts(tmp_path, seed_state):
    """Escalation without an exact rung and gates RFAU cannot meet: after max_attempts failed
    batches the request stops going round; a request queued with it is never dragged down."""
    settings = seed_state(tmp_path / ".rfau")
    store = str(tmp_path / ".rfau" / "store")
    _queue(tmp_path, store, "stuck")
    p = _params(store, escalation=[WEAK_RFAU], max_attempts=2)
    reqs = RequestStore.from_uri(store)
    for n in range(2):
        res = run_batch(tmp_path / f"w{n}", p, settings)
        assert res.request_ids == ["stuck"] and not res.registered.promoted  # type: ignore[union-attr]
    assert failed_batches(reqs.get("stuck")) == 2 and reqs.get("stuck").state is RequestState.PENDING
    res = run_batch(tmp_path / "w2", p, settings)  # the third batch does not try it again
    st = reqs.get("stuck")
    assert st.state is RequestState.NEEDS_RETRAIN and "max_attempts" in st.detail, st
    assert res.registered is None and len(_records(store, settings)) == 2


def test_one_kfp_local_run_fulfils_it_by_the_retrain_rung(tmp_path, seed_state):
    """The same ladder as one Kubeflow graph run by kfp.local: unlearn -> evaluate -> (gates
    failed) retrain -> evaluate -> register-retrain."""
    from rfau.pipelines.run import pipeline_arguments, run_local

    settings = seed_state(tmp_path / ".rfau")
    store = str(tmp_path / ".rfau" / "store")
    _queue(tmp_path, store, "c3")
    res, run_dir = run_local(pipeline_arguments(_params(store), local=True), tmp_path / "runs", settings)
    assert res.promoted, res  # type: ignore[union-attr]
    ran = {p.name for p in run_dir.iterdir() if p.is_dir()}
    # kfp.local names the output folders by task: the exact branch's evaluate and register are the
    # pipeline's second ones (display names evaluate-retrain, register-retrain)
    assert {"unlearn", "evaluate", "retrain", "evaluate-2", "register-2"} <= ran, ran
    assert "register" not in ran
    assert RequestStore.from_uri(store).get("c3").state is RequestState.FULFILLED
    (record,) = _records(store, settings)
    assert [(a["method"], a["gates_passed"]) for a in record["attempts"]] == [
        ("rfau", False),
        ("retrain", True),
    ]
    assert record["exact"] is True
    with contextlib.chdir(tmp_path):
        verify = run_cli("audit", "verify", "--no-weights", RFAU_STATE_DIR=str(tmp_path / ".rfau"))
        shown = run_cli("audit", "show", "c3", "--out", "proof", RFAU_STATE_DIR=str(tmp_path / ".rfau"))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert shown.returncode == 0, shown.stderr
    proof = (tmp_path / "proof" / "proof.md").read_text()
    assert "was fulfilled by batch" in proof and "(exact)" in proof and "(approximate" not in proof, proof[
        :600
    ]


def test_an_overdue_request_left_unfulfilled_fails_the_scheduled_run(tmp_path, seed_state):
    seed_state(tmp_path / ".rfau")
    env = {"RFAU_STATE_DIR": str(tmp_path / ".rfau")}
    _queue(tmp_path, str(tmp_path / ".rfau" / "store"), "late", deadline_days=1)  # received in November
    with contextlib.chdir(tmp_path):
        # "original" forgets nothing: the class-wise gates fail, the request stays unfulfilled
        r = run_cli("batch", "run", "--set", "method=original", "--set", 'escalation=["original"]', **env)
        listed = run_cli("request", "list", "--json", **env)
    assert r.returncode == 1 and "overdue" in r.stderr and "late" in r.stderr, r.stderr
    (row,) = json.loads(listed.stdout)
    assert row["overdue"] is True and row["failed_batches"] == 1 and row["due"].startswith("2026-11-28")
    assert [a["method"] for a in row["attempts"]] == ["original"]


def test_a_request_that_failed_max_attempts_batches_is_taken_alone_on_the_exact_rung(tmp_path, seed_state):
    """Fair scheduling: it never drags the requests queued with it down again, and goes straight
    to retrain; should that fail too, it needs retraining (the batch says so in advance)."""
    from rfau.batch import BatchContext, data_split

    settings = seed_state(tmp_path / ".rfau")
    store = str(tmp_path / ".rfau" / "store")
    _queue(tmp_path, store, "old", "2026-11-20T00:00:00Z")
    reqs = RequestStore.from_uri(store)
    for n in range(2):  # two batches failed it at their gates
        reqs.claim_pending(f"b{n}")
        reqs.release("old", f"b{n}", "version 9 failed gates ['forget_accuracy']")
    _queue(tmp_path, store, "new", sample_ids=[f"digits/{i}" for i in range(1, 40) if i % 5])
    meta = data_split(
        tmp_path / "batch",
        "digits",
        BatchContext.open(store, settings),
        params=_params(store, max_attempts=2),
    )
    assert meta.request_ids == ["old"] and [d.request_id for d in meta.deferred] == ["new"]
    assert "taken alone" in meta.deferred[0].reason and reqs.get("new").state is RequestState.PENDING
    assert meta.plan == [{"rung": 2, "method": "retrain", "config": {"epochs": 3}}]
    assert "max_attempts" in (meta.exact_only or "") and "failed too" in (meta.if_failed or "")


def test_a_request_inadmissible_even_alone_is_rejected_not_deferred_forever():
    from rfau.data.datasets import load_dataset
    from rfau.data.requests import DeletionRequest
    from rfau.data.split import admit_requests

    ds = load_dataset("digits")
    # nine classes forgotten earlier: forgetting the tenth would leave nothing to retain
    excluded = [s for s in ds.split_ids("train") if ds.y[ds.indices([s])[0]] < 9]
    last = DeletionRequest(request_id="last", classes=[ds.classes[9]], reason="r", received_at=RECEIVED)
    adm = admit_requests(ds, [("request last", last)], 0.1, excluded)
    assert not adm.deferred and [r.request_id for _, r, _ in adm.rejected] == ["last"], adm
    assert "even alone" in adm.rejected[0][2]
