"""Two `rfau batch run` at once (issue 13, item 6 and the tests section).

- In ONE work folder: the second stops at once with a message naming the holder of the folder's
  lock and changes nothing; the first completes.
- In two folders over ONE request store and registry: no request is claimed twice, both exit 0,
  and the ledger verifies and agrees with the champion and the request states.

Real processes (the lock and the exclusive claim events are what is tested); each batch starts
from the seeded champion with tiny method settings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rfau.audit.trail import AuditTrail
from rfau.cli import app
from rfau.data.request_store import RequestState, RequestStore
from rfau.tracking import registry
from tests.support.cli import subprocess_env

RFAU = str(Path(sys.executable).parent / "rfau")
FAST = ["--set", 'method_config={"epochs": 3, "retain_budget": 300}']
TRAIN_IDS = [f"digits/{i}" for i in range(1, 200) if i % 5]  # every 5th sample is a test sample

pytestmark = pytest.mark.e2e


def _add(root: Path, rid: str, ids: list[str]) -> None:
    path = root / f"{rid}.json"
    path.write_text(
        json.dumps(
            {"request_id": rid, "sample_ids": ids, "reason": "erasure", "received_at": "2026-11-28T00:00:00Z"}
        )
    )
    RequestStore.open(root / ".rfau" / "store", create=True).add([path])


def _start(root: Path, workdir: str) -> subprocess.Popen:
    return subprocess.Popen(
        [RFAU, "batch", "run", "--workdir", workdir, *FAST],
        cwd=root,
        env=subprocess_env(RFAU_STATE_DIR=str(root / ".rfau")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(what: str, ready, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the first batch ended before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    return out


def _audit(root: Path):
    """(ledger records, request store, champion version), after checking the ledger verifies."""
    from rfau.tracking.settings import TrackingSettings

    settings = TrackingSettings(state_dir=root / ".rfau")
    store = str(root / ".rfau" / "store")
    trail = AuditTrail.open(store, settings)
    assert trail.verify(check_weights=False) == []
    return trail.records(), RequestStore.from_uri(store), registry.Registry(settings).champion().version


def _claims(reqs: RequestStore, rid: str) -> list[str]:
    return [e["batch_id"] for e in reqs.get(rid).history if e["state"] == RequestState.IN_PROGRESS.value]


def test_a_second_batch_in_the_same_folder_is_refused_and_the_first_completes(
    tmp_path, monkeypatch, seed_state
):
    seed_state(tmp_path / ".rfau")
    _add(tmp_path, "req-1", TRAIN_IDS[:30])
    first = _start(tmp_path, "work")
    lock = tmp_path / "work" / ".rfau-lock"
    _wait_for("the folder's lock", lambda: lock.is_file() and f"pid {first.pid}" in lock.read_text(), first)
    # the second batch, in-process (no second interpreter to start): stopped by the lock
    monkeypatch.chdir(tmp_path)
    second = CliRunner().invoke(
        app, ["batch", "run", "--workdir", "work", *FAST], env={"RFAU_STATE_DIR": str(tmp_path / ".rfau")}
    )
    assert second.exception is None or isinstance(second.exception, SystemExit), second.exc_info
    assert second.exit_code == 3  # a held lock: a runtime failure (rfau.errors.ExitCode.RUNTIME)
    assert f"is in use by pid {first.pid} rfau batch run" in second.stderr
    assert "Traceback" not in second.output
    assert "promoted to champion" in _finish(first)
    records, reqs, champion = _audit(tmp_path)
    assert [r["request_ids"] for r in records] == [["req-1"]]
    assert reqs.get("req-1").state is RequestState.FULFILLED and len(_claims(reqs, "req-1")) == 1
    assert champion == records[0]["model"]["after"]["version"]


def test_two_batches_in_two_folders_over_one_store_never_claim_twice(tmp_path, seed_state):
    seed_state(tmp_path / ".rfau")
    store = RequestStore.from_uri(tmp_path / ".rfau" / "store")
    _add(tmp_path, "req-1", TRAIN_IDS[:30])
    first = _start(tmp_path, "work-a")
    _wait_for("claim of req-1", lambda: store.get("req-1").state is RequestState.IN_PROGRESS, first)
    # a request arrives while the first batch runs, and a second batch starts in its own folder
    _add(tmp_path, "req-2", TRAIN_IDS[30:60])
    second = _start(tmp_path, "work-b")
    _finish(first), _finish(second)
    records, reqs, champion = _audit(tmp_path)
    for rid in ("req-1", "req-2"):
        assert len(_claims(reqs, rid)) == 1, reqs.get(rid).history  # never claimed twice
    recorded = [rid for r in records for rid in r["request_ids"]]
    assert sorted(recorded) == ["req-1", "req-2"]  # each forgotten once, recorded once
    fulfilled = {rid for rid in ("req-1", "req-2") if reqs.get(rid).state is RequestState.FULFILLED}
    assert fulfilled == {rid for r in records if r["promoted"] for rid in r["request_ids"]}
    promoted = [r for r in records if r["promoted"]]
    assert champion == promoted[-1]["model"]["after"]["version"]
    # each promotion started from the champion before it: the last champion forgot every request
    for earlier, later in zip(promoted, promoted[1:]):
        assert later["model"]["before"]["version"] == earlier["model"]["after"]["version"], (earlier, later)


def _stages(root: Path, name: str, stages: list[str]) -> dict | None:
    """Run ``stages`` of batch ``name`` (folder root/name) in-process, as DVC or the pipeline does."""
    from rfau import batch
    from rfau.tracking.settings import TrackingSettings

    settings, store, wd = (
        TrackingSettings(state_dir=root / ".rfau"),
        str(root / ".rfau" / "store"),
        root / name,
    )
    res = None
    for stage in stages:
        if stage == "split":
            assert not batch.data_split(
                wd / "batch", "digits", batch.BatchContext.open(store, settings)
            ).empty
        elif stage == "unlearn":
            batch.unlearn(wd / "batch", wd / "model", "rfau", {"epochs": 3, "retain_budget": 300})
        elif stage == "evaluate":
            batch.evaluate(wd / "batch", wd / "model", wd / "evaluation")
        else:
            ctx = batch.BatchContext.of_batch(wd / "batch", settings)
            res = batch.register(wd / "batch", wd / "model", wd / "evaluation", wd / "registered", ctx)
    return res


def test_a_batch_whose_base_was_replaced_meanwhile_is_not_promoted(tmp_path, seed_state):
    """Both batches split from version 1; the first promotes version 2. The second's version (1
    minus req-2) still knows req-1's samples, so it must not become champion: its request waits
    for the next batch, which starts from version 2 and forgets it there."""
    seed_state(tmp_path / ".rfau")
    _add(tmp_path, "req-1", TRAIN_IDS[:30])
    _stages(tmp_path, "a", ["split"])
    _add(tmp_path, "req-2", TRAIN_IDS[30:60])
    _stages(tmp_path, "b", ["split"])
    first = _stages(tmp_path, "a", ["unlearn", "evaluate", "register"])
    second = _stages(tmp_path, "b", ["unlearn", "evaluate", "register"])
    assert first.gates_passed and first.promoted and first.champion == first.version
    assert second.gates_passed and not second.promoted
    assert second.champion == first.version  # the champion stays the version that forgot req-1
    records, reqs, champion = _audit(tmp_path)
    assert [r["promoted"] for r in records] == [True, False]
    assert reqs.get("req-2").state is RequestState.PENDING and "champion" in reqs.get("req-2").detail
    third = _stages(tmp_path, "c", ["split", "unlearn", "evaluate", "register"])
    records, reqs, champion = _audit(tmp_path)
    assert champion == third.version and records[-1]["model"]["before"]["version"] == first.version
    assert {reqs.get(r).state for r in ("req-1", "req-2")} == {RequestState.FULFILLED}
