"""What an operator's world does to a batch, each as one line with its exit code and no request
left claimed: a deleted MLflow experiment, a corrupt request.json, a full disk, a SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rfau.data.request_store import RequestState, RequestStore
from rfau.errors import ExitCode
from tests.support.cli import BIN, run_cli, subprocess_env

GOOD = {"request_id": "r1", "classes": ["3"], "reason": "gdpr", "received_at": "2026-01-01T00:00:00Z"}
# a short unlearn on one rung: these tests stop or break the batch around it, its quality is not tested
QUICK = ["--set", 'method_config={"epochs": 1, "retain_budget": 200}', "--set", 'escalation=["rfau"]']


def _cli(root: Path, *args: str, **env: str):
    return run_cli(*args, **{"RFAU_STATE_DIR": str(root / ".rfau"), **env})


def _error_line(res) -> str:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def _queue(root: Path, store: Path, *requests: dict) -> RequestStore:
    for req in requests:
        (root / f"{req['request_id']}.json").write_text(json.dumps(req))
        res = _cli(root, "request", "add", str(root / f"{req['request_id']}.json"), "--store", str(store))
        assert res.returncode == 0, res.stderr
    return RequestStore.from_uri(store)


def test_a_deleted_experiment_fails_before_anything_is_claimed(tmp_path, monkeypatch, seed_state):
    """Old: a traceback (exit 1) from register, after unlearn and evaluate had run."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    settings = seed_state(tmp_path / ".rfau")
    client = MlflowClient(settings.uri())
    client.delete_experiment(client.get_experiment_by_name(settings.experiment).experiment_id)
    reqs = _queue(tmp_path, tmp_path / ".rfau" / "store", GOOD)
    res = _cli(tmp_path, "batch", "run", "-w", "work")
    assert res.returncode == ExitCode.RUNTIME, res.stderr
    assert "experiment 'rfau'" in _error_line(res) and "is deleted" in _error_line(res)
    assert [h["state"] for h in reqs.get("r1").history] == ["pending"]  # never claimed
    assert not (tmp_path / "work" / "model").exists()  # nothing unlearned


def _corrupt(store: Path, rid: str) -> bytes:
    path = store / "requests" / rid / "request.json"
    path.write_text('{"request_id": "' + rid + '", "classes": 3}')
    return path.read_bytes()


def test_a_corrupt_pending_request_is_skipped_and_kept(tmp_path, monkeypatch, seed_state):
    """Old: a 3-line pydantic error that blocked every batch. Now: one warning line naming the
    request and its file; the batch takes the others; the corrupt one is left as it was."""
    monkeypatch.chdir(tmp_path)
    seed_state(tmp_path / ".rfau")
    store = tmp_path / ".rfau" / "store"
    reqs = _queue(tmp_path, store, GOOD, {**GOOD, "request_id": "r2", "classes": ["4"]})
    broken = _corrupt(store, "r2")
    listed = _cli(tmp_path, "request", "list", "--json")
    assert listed.returncode == 0 and [r["request_id"] for r in json.loads(listed.stdout)] == ["r1"]
    (warning,) = [x for x in listed.stderr.splitlines() if "r2" in x]
    assert "corrupt" in warning and "request.json" in warning and "classes" in warning
    res = _cli(tmp_path, "batch", "split", "--out", "b")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "b" / "batch.json").read_text())["request_ids"] == ["r1"]
    assert (store / "requests" / "r2" / "request.json").read_bytes() == broken
    assert not (store / "requests" / "r2" / "events").exists() or all(
        "pending" in p.name for p in (store / "requests" / "r2" / "events").iterdir()
    )
    assert reqs.get("r1").state is RequestState.IN_PROGRESS


def test_a_corrupt_fulfilled_request_blocks_with_one_line(tmp_path, monkeypatch):
    """A fulfilled request's samples must stay out of every later model: unreadable, the batch
    cannot keep them out, so it stops (exit 3) naming the request and the file."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / ".rfau" / "store"
    reqs = _queue(tmp_path, store, GOOD, {**GOOD, "request_id": "r2", "classes": ["4"]})
    reqs.claim_pending("batch-1")
    reqs.fulfil("r2", "batch-1", "done")
    _corrupt(store, "r2")
    res = _cli(tmp_path, "batch", "split", "--out", "b")
    line = _error_line(res)
    assert res.returncode == ExitCode.RUNTIME
    assert "'r2' is corrupt" in line and "request.json" in line and "fulfilled" in line


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir(parents=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here (root and mount(8) needed): {e}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path) -> None:
    """Write until the filesystem is full."""
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    with contextlib.suppress(OSError), open(folder / "filler2", "wb") as f:
        while True:
            f.write(b"\0" * 512)
            f.flush()


def test_a_full_registry_disk_is_one_line_and_releases_the_requests(tmp_path, monkeypatch, seed_state):
    """The registry's disk (a 64 MB tmpfs) fills up before register. Old: ~230 lines of MLflow
    tracebacks, and the requests stayed in progress. Now: one line (exit 3); pending again."""
    monkeypatch.chdir(tmp_path)
    with _tmpfs(tmp_path / "disk", "64m") as disk:
        seed_state(disk / "state")
        store = tmp_path / "store"  # the request store on a disk with room
        reqs = _queue(tmp_path, store, GOOD)
        _fill(disk)
        res = run_cli(
            "batch", "run", "-w", "work", *QUICK,
            RFAU_STATE_DIR=str(disk / "state"), RFAU_REQUEST_STORE=str(store),
        )  # fmt: skip
        line = _error_line(res)
        assert res.returncode == ExitCode.RUNTIME, res.stderr
        assert "full" in line or "No space left" in line, line
        assert len(res.stderr.splitlines()) < 10, res.stderr
        assert reqs.get("r1").state is RequestState.PENDING


def test_sigterm_releases_the_claims_and_says_so(tmp_path, seed_state):
    """Old: exit 143 without a word, the request in progress for the stale window (6 h)."""
    seed_state(tmp_path / ".rfau")
    store = tmp_path / ".rfau" / "store"
    reqs = _queue(tmp_path, store, GOOD)
    env = subprocess_env(
        RFAU_STATE_DIR=str(tmp_path / ".rfau"), RFAU_FAULT_AT="unlearned:pause", RFAU_TEST_FAULTS="1"
    )
    proc = subprocess.Popen(
        [str(BIN / "rfau"), "batch", "run", "-w", "work", *QUICK],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while not (tmp_path / "work" / "model" / "unlearn.json").exists():  # paused after unlearn
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.5)
        assert reqs.get("r1").state is RequestState.IN_PROGRESS
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    lines = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert proc.returncode == ExitCode.TERMINATED == 143 and "Traceback" not in stderr, stderr
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "r1" in lines[0], stderr
    assert reqs.get("r1").state is RequestState.PENDING


def test_a_pipeline_task_stopped_by_sigterm_releases_its_batch(tmp_path, monkeypatch, seed_state):
    """A KFP task after data-split (unlearn, evaluate, register) told to stop: its batch's
    requests are pending again at once and the error names them."""
    from rfau.batch import release_on_sigterm
    from rfau.errors import Terminated

    monkeypatch.chdir(tmp_path)
    seed_state(tmp_path / ".rfau")
    reqs = _queue(tmp_path, tmp_path / ".rfau" / "store", GOOD)
    assert _cli(tmp_path, "batch", "split", "--out", "b").returncode == 0
    assert reqs.get("r1").state is RequestState.IN_PROGRESS
    monkeypatch.setenv("RFAU_STATE_DIR", str(tmp_path / ".rfau"))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match=r"the unlearn task stopped by SIGTERM; .*pending again\): r1"):
        with release_on_sigterm(tmp_path / "b", "the unlearn task"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # interrupted by the handler
    assert reqs.get("r1").state is RequestState.PENDING
    assert signal.getsignal(signal.SIGTERM) == before  # the process's own handler is back


def test_a_sigterm_landing_inside_a_finalizer_is_delivered_again():
    """Python drops an exception raised in a __del__: a SIGTERM whose handler runs there must not
    be lost (the batch would sleep on, its requests claimed, until the scheduler's SIGKILL)."""
    from rfau.errors import Terminated
    from rfau.signals import sigterm_raises

    class SignalsInItsFinalizer:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here, inside the finalizer

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match="the test stopped by SIGTERM"), sigterm_raises("the test"):
        SignalsInItsFinalizer()  # collected at once: its __del__ runs
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_sigterm_inside_a_librarys_except_exception_still_stops():
    """scikit-learn's cross-validation turns any Exception of a fit or a score into NaN: a SIGTERM
    that landed there was swallowed and the batch ran on (found with the signal sent during
    evaluate). Terminated is no Exception, so it passes such a handler, here a real
    cross_val_score whose scorer is interrupted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from rfau.errors import Terminated
    from rfau.signals import sigterm_raises

    def interrupted_scorer(estimator, x, y):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler runs here, inside scikit-learn's try/except Exception
        return 1.0

    x = [[float(i)] for i in range(20)]
    y = [i % 2 for i in range(20)]
    with pytest.raises(Terminated, match="the test stopped by SIGTERM"), sigterm_raises("the test"):
        cross_val_score(LogisticRegression(), x, y, cv=2, scoring=interrupted_scorer)
        time.sleep(5)
