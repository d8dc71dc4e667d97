"""Crashes at chosen moments of a real `rfau batch run` (SIGKILL through RFAU_FAULT_AT), then the
recovery path: afterwards the ledger, the champion alias and the request states agree, and
`rfau audit verify` passes. Also the registry side of the audit and claims checked at register."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rfau.audit.trail import AuditTrail, registry_problems
from rfau.data.request_store import RequestState, RequestStore
from rfau.params import BatchParams
from rfau.tracking import registry
from rfau.tracking.settings import TrackingSettings
from tests.support.cli import CliResult, run_cli, run_rfau
from tests.support.services import S3_ENV, free_port

FAST_CONFIG = {"epochs": 3, "retain_budget": 300}  # as test_concurrency: passes the gates for its few samples
FAST = ["--set", f"method_config={json.dumps(FAST_CONFIG)}"]
IDS = [f"digits/{i}" for i in range(1, 200) if i % 5][:40]  # training samples (every 5th is test)

pytestmark = pytest.mark.e2e


def _rfau(root: Path, *args, **env) -> subprocess.CompletedProcess | CliResult:
    """`rfau ARGS` in ``root``: a real process where a fault is to kill it, else in-process."""
    if "RFAU_FAULT_AT" in env:
        return run_rfau(*args, cwd=root, RFAU_STATE_DIR=str(root / ".rfau"), RFAU_TEST_FAULTS="1", **env)
    with contextlib.chdir(root):
        return run_cli(*args, RFAU_STATE_DIR=str(root / ".rfau"), **env)


def _queue(root: Path, rid: str = "req-1") -> None:
    req = root / f"{rid}.json"
    req.write_text(
        json.dumps(
            {
                "request_id": rid,
                "sample_ids": IDS,
                "reason": "test",
                "subject": "ann",
                "received_at": "2026-11-28T00:00:00Z",
            }
        )
    )
    done = _rfau(root, "request", "add", str(req))
    assert done.returncode == 0, done.stderr


def _state(root: Path):
    settings = TrackingSettings(state_dir=root / ".rfau")
    store = str(root / ".rfau" / "store")
    records = AuditTrail.open(store, settings).records()
    return settings, records, RequestStore.from_uri(store), registry.Registry(settings).champion()


@pytest.mark.parametrize("point", ["register:version-created", "register:record-appended"])
def test_a_batch_killed_during_register_is_completed_and_never_lies(tmp_path, point, seed_state):
    seed_state(tmp_path / ".rfau")  # the bootstrap champion: the batch starts from it
    _queue(tmp_path)
    # the stages before register in this process; the register stage in a process that is killed
    wd = _stages_before_register(tmp_path)
    killed = _rfau(tmp_path, "batch", "register", *_register_args(wd), RFAU_FAULT_AT=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    settings, records, reqs, champ = _state(tmp_path)
    if point == "register:record-appended":
        # the crash window: the record promises the new version, the alias has not moved yet
        assert len(records) == 1 and records[0]["promoted"]
        assert champ.version != records[0]["model"]["after"]["version"]
        # until the next batch completes it, the audit says so, and the proof says what serves
        pending = _rfau(tmp_path, "audit", "verify", "--no-weights")
        assert pending.returncode == 1 and "the promotion is pending" in pending.stderr, pending.stderr
        shown = _rfau(tmp_path, "audit", "show", "req-1")
        assert shown.returncode == 0 and f"now serving: version {champ.version}" in shown.stdout
    # the next scheduled batch (its requests taken up after the stale window) completes it
    again = _rfau(tmp_path, "batch", "run", *FAST, RFAU_STALE_AFTER_HOURS="0.0001")
    assert again.returncode == 0, again.stderr
    settings, records, reqs, champ = _state(tmp_path)
    assert [r["request_ids"] for r in records] == [["req-1"]]  # forgotten once, recorded once
    assert records[0]["promoted"] and champ.version == records[0]["model"]["after"]["version"]
    assert reqs.get("req-1").state is RequestState.FULFILLED
    verify = _rfau(tmp_path, "audit", "verify", "--no-weights")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _stages_before_register(root: Path, before_evaluate=lambda: None) -> Path:
    """`rfau batch split`, `unlearn` and `evaluate` (in this process) -> the work folder."""
    wd = root / "w"
    for stage, args in (
        ("split", ["--out", str(wd / "batch")]),
        ("unlearn", ["--batch", str(wd / "batch"), "--out", str(wd / "model"), *FAST]),
        (
            "evaluate",
            ["--batch", str(wd / "batch"), "--model", str(wd / "model"), "--out", str(wd / "evaluation")],
        ),
    ):
        if stage == "evaluate":
            before_evaluate()
        done = _rfau(root, "batch", stage, *args)
        assert done.returncode == 0, done.stderr
    return wd


def _register_args(wd: Path) -> list[str]:
    return [
        "--batch",
        str(wd / "batch"),
        "--model",
        str(wd / "model"),
        "--evaluation",
        str(wd / "evaluation"),
        "--out",
        str(wd / "registered"),
    ]


def test_register_refuses_a_batch_that_lost_its_claims(tmp_path, seed_state):
    seed_state(tmp_path / ".rfau")
    _queue(tmp_path)
    reqs = RequestStore.from_uri(str(tmp_path / ".rfau" / "store"))
    wd = _stages_before_register(
        tmp_path, before_evaluate=lambda: reqs.operator_release("req-1", reason="operator released it")
    )
    reg = _rfau(tmp_path, "batch", "register", *_register_args(wd))
    assert reg.returncode != 0 and "no longer holds its requests" in reg.stderr
    settings, records, reqs, _ = _state(tmp_path)
    assert records == [] and reqs.get("req-1").state is RequestState.PENDING
    assert sorted(registry.Registry(settings).version_tags()) == [1]  # the bootstrap original only


def test_register_checks_the_models_lineage_and_the_claims_when_it_commits(tmp_path, seed_state, monkeypatch):
    from rfau import batch
    from rfau.models.checkpoint import CARD

    seed_state(tmp_path / ".rfau")
    _queue(tmp_path)
    wd = _stages_before_register(tmp_path)
    # a model whose card says it was unlearned for another request
    card = wd / "model" / CARD
    saved = card.read_text()
    other = json.loads(saved)
    other["lineage"]["request_ids"] = ["req-2"]
    card.write_text(json.dumps(other))
    reg = _rfau(tmp_path, "batch", "register", *_register_args(wd))
    assert reg.returncode == 3 and "was not made for batch" in reg.stderr and "['req-2']" in reg.stderr
    card.write_text(saved)
    settings, records, reqs, champ = _state(tmp_path)
    assert records == [] and sorted(registry.Registry(settings).version_tags()) == [1]

    # an operator releases the request while register runs (the version exists, no record yet)
    def release(point: str) -> None:
        if point == "register:version-created":
            reqs.operator_release("req-1", reason="the requester asked to wait")

    monkeypatch.setattr(batch.registration, "fault_point", release)
    reg = _rfau(tmp_path, "batch", "register", *_register_args(wd))
    assert reg.returncode == 3 and "no longer holds its requests" in reg.stderr
    assert "version 2 is abandoned" in reg.stderr
    settings, records, reqs, champ = _state(tmp_path)
    assert records == [] and champ.version == 1 and reqs.get("req-1").state is RequestState.PENDING
    assert registry.Registry(settings).version_tags()[2]["rfau.abandoned"]
    verify = _rfau(tmp_path, "audit", "verify", "--no-weights")
    assert verify.returncode == 0, verify.stderr


def test_a_cut_between_the_record_slot_and_the_ledger_is_appended_as_recovered(
    tmp_path, seed_state, monkeypatch
):
    """The ledger write fails after the batch took its record slot: the batch fails and releases
    its request; the next batch appends the dead batch's record marked recovered and unpromoted
    (its version never served), then its own."""
    from rfau import batch
    from rfau.audit.trail import LEDGER_KEY
    from rfau.errors import RfauError
    from rfau.storage import LocalStore

    settings = seed_state(tmp_path / ".rfau")
    _queue(tmp_path)
    store = str(tmp_path / ".rfau" / "store")
    real, cut = LocalStore.put_bytes, []

    def put_bytes(self, key, data, *, exclusive=False):
        if key == LEDGER_KEY and not cut:
            cut.append(key)
            raise RfauError("the object store is unreachable (cut)")
        return real(self, key, data, exclusive=exclusive)

    monkeypatch.setattr(LocalStore, "put_bytes", put_bytes)
    params = BatchParams(store=store, method_config=FAST_CONFIG)
    with pytest.raises(RfauError, match="cut"):
        batch.run_batch(tmp_path / "w1", params, settings)
    assert (Path(store) / "audit" / "records" / "000001.json").is_file()
    _, records, reqs, champ = _state(tmp_path)
    assert records == [] and champ.version == 1 and reqs.get("req-1").state is RequestState.PENDING

    done = batch.run_batch(tmp_path / "w2", params, settings)
    assert done.registered.promoted
    _, records, reqs, champ = _state(tmp_path)
    dead, own = records
    assert dead["recovered"] and not dead["promoted"] and dead["champion_after"] == 1
    assert (
        own["promoted"]
        and own["batch_id"] == done.batch_id
        and champ.version == own["model"]["after"]["version"]
    )
    verify = _rfau(tmp_path, "audit", "verify", "--no-weights")
    assert verify.returncode == 0, verify.stderr


def test_the_audit_sees_orphans_unrecorded_passes_and_a_foreign_champion():
    boot = {"rfau.regime": "none"}
    ok = {"rfau.gates_passed": "true"}
    failed = {"rfau.gates_passed": "false", "rfau.gate_failures": "ua=1 > 0"}
    records = [{"model": {"after": {"version": 2}}, "promoted": True}]
    assert registry_problems(records, {1: boot, 2: ok, 3: failed}, {"version": 2}) == []
    assert registry_problems(records, {1: boot, 2: ok}, {"version": 1}) == []  # rolled back
    problems = registry_problems(records, {1: boot, 2: ok, 4: ok, 5: {}}, {"version": 4})
    assert any("version 4 claims it passed" in p for p in problems)
    assert any("version 5 is in no ledger record" in p for p in problems)
    assert any("champion version 4" in p for p in problems)
    assert registry_problems(records, {1: boot, 2: ok, 6: {"rfau.abandoned": "x"}}, None) == []


# --- an S3 outage in the middle of register (a loopback proxy in front of moto, cut and restored) --
class TcpProxy:
    """A loopback TCP proxy in front of a server: ``cut()`` drops every connection and refuses new
    ones (an outage), ``restore()`` serves again on the same port."""

    def __init__(self, target_port: int):
        self.port, self.target = free_port(), target_port
        self.conns: list[socket.socket] = []
        self.restore()

    def restore(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def cut(self) -> None:
        # shutdown first: a bare close() leaves the accept() already waiting in _accept able to
        # take one more connection (a client that reconnects would still get through)
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()
        self.conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed by cut()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()


def test_an_s3_outage_right_after_the_version_is_created_is_completed_by_the_next_batch(
    tmp_path, seed_state, s3_server, monkeypatch
):
    """The request store and ledger on S3 go away once the new version exists (before the ledger
    record): the batch fails without a record or a champion move, and once S3 is back the next
    batch (after the stale window) forgets the request once, records it once, and the audit of
    ledger, registry and requests agrees."""
    from rfau import batch
    from rfau.data.datasets import load_dataset
    from rfau.errors import RfauError

    proxy = TcpProxy(int(s3_server["endpoint"].rsplit(":", 1)[1]))
    salt = {"RFAU_AUDIT_SALT": "shared-test-salt"}  # a remote ledger needs the shared salt
    for k, v in {**S3_ENV, **salt, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}.items():
        monkeypatch.setenv(k, v)
    store = f"s3://{s3_server['bucket']}/outage-{tmp_path.name}"
    settings = seed_state(tmp_path / ".rfau")  # the registry (local sqlite) stays up
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps(
            {
                "request_id": "req-1",
                "sample_ids": IDS,
                "reason": "t",
                "subject": "ann",
                "received_at": "2026-11-28T00:00:00Z",
            }
        )
    )
    RequestStore.open(store, create=True).add([req], load_dataset("digits"))

    def outage(point: str) -> None:
        if point == "register:version-created":
            proxy.cut()

    monkeypatch.setattr(batch.registration, "fault_point", outage)
    with pytest.raises(RfauError, match="unreachable") as failed:
        batch.run_batch(tmp_path / "w1", BatchParams(store=store, method_config=FAST_CONFIG), settings)
    print(failed.value)  # what the operator reads
    monkeypatch.setattr(batch.registration, "fault_point", lambda point: None)
    proxy.restore()
    assert AuditTrail.open(store, settings).records() == []  # nothing claims the deletion
    assert registry.Registry(settings).champion().version == 1  # the original still serves

    monkeypatch.setenv("RFAU_STALE_AFTER_HOURS", "0.0001")  # whatever the failed batch left claimed
    time.sleep(1)
    done = batch.run_batch(tmp_path / "w2", BatchParams(store=store, method_config=FAST_CONFIG), settings)
    assert done.registered is not None and done.registered.promoted
    records = AuditTrail.open(store, settings).records()
    assert [r["request_ids"] for r in records] == [["req-1"]]  # forgotten once, recorded once
    assert registry.Registry(settings).champion().version == records[0]["model"]["after"]["version"]
    assert RequestStore.from_uri(store).get("req-1").state is RequestState.FULFILLED
    verify = run_cli(
        "audit",
        "verify",
        "--no-weights",
        RFAU_STATE_DIR=str(tmp_path / ".rfau"),
        RFAU_REQUEST_STORE=store,
        **salt,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_mlflow_outage_right_after_the_version_is_created_is_recovered(
    tmp_path, seed_state, mlflow_server, monkeypatch
):
    """The tracking server goes away once the new version exists: the batch fails with a clear
    error (no raw MlflowException), records nothing and moves no alias; its version cannot even be
    tagged abandoned. Once the server is back, the next batch tags that orphan abandoned (its
    batch no longer holds its requests), forgets the request once, and the audit agrees."""
    from rfau import batch
    from rfau.data.datasets import load_dataset
    from rfau.errors import RfauError

    proxy = TcpProxy(int(mlflow_server["url"].rsplit(":", 1)[1]))
    tracking = {"tracking_uri": f"http://127.0.0.1:{proxy.port}", "model_name": f"outage-{tmp_path.name}"}
    settings = seed_state(tmp_path / ".rfau", **tracking)
    for k, v in {
        "RFAU_TRACKING_URI": tracking["tracking_uri"],
        "RFAU_MODEL_NAME": tracking["model_name"],
    }.items():
        monkeypatch.setenv(k, v)  # what the failing batch's own clean-up reads
    store = str(tmp_path / "store")
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps(
            {"request_id": "req-1", "sample_ids": IDS, "reason": "t", "received_at": "2026-11-28T00:00:00Z"}
        )
    )
    RequestStore.open(store, create=True).add([req], load_dataset("digits"))

    def outage(point: str) -> None:
        if point == "register:version-created":
            proxy.cut()

    monkeypatch.setattr(batch.registration, "fault_point", outage)
    with pytest.raises(RfauError) as failed:
        batch.run_batch(tmp_path / "w1", BatchParams(store=store, method_config=FAST_CONFIG), settings)
    print(failed.value)
    monkeypatch.setattr(batch.registration, "fault_point", lambda point: None)
    proxy.restore()
    assert AuditTrail.open(store, settings).records() == []
    assert registry.Registry(settings).champion().version == 1
    orphan = registry.Registry(settings).version_tags()[2]
    assert orphan["rfau.gates_passed"] == "true" and "rfau.abandoned" not in orphan  # the server was down

    reqs = RequestStore.from_uri(store)
    assert reqs.get("req-1").state is RequestState.PENDING  # the local store took the release
    # what the next batch does before it claims: its batch holds no request, so it is abandoned
    assert batch._abandon_orphans(batch.BatchContext.open(store, settings)) == [2]
    assert registry.Registry(settings).version_tags()[2]["rfau.abandoned"]
    done = batch.run_batch(tmp_path / "w2", BatchParams(store=store, method_config=FAST_CONFIG), settings)
    assert done.registered is not None and done.registered.promoted
    records = AuditTrail.open(store, settings).records()
    assert [r["request_ids"] for r in records] == [["req-1"]]
    # unlearning is deterministic: the same weights are the same version, taken up again and no
    # longer marked abandoned
    assert registry.Registry(settings).champion().version == records[0]["model"]["after"]["version"] == 2
    assert "rfau.abandoned" not in registry.Registry(settings).version_tags()[2]
    assert RequestStore.from_uri(store).get("req-1").state is RequestState.FULFILLED
    env = {"RFAU_STATE_DIR": str(tmp_path / ".rfau"), "RFAU_REQUEST_STORE": store}
    env |= {"RFAU_TRACKING_URI": tracking["tracking_uri"], "RFAU_MODEL_NAME": tracking["model_name"]}
    verify = run_cli("audit", "verify", "--no-weights", **env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
