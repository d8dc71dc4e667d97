"""The deletion frontier: every version knows which requests' data it no longer holds; promote,
rollback and any served alias are checked against the fulfilled requests (a real `mlflow server`),
the split excludes only what the base model's lineage excludes, and `audit verify` audits the
request states, the evidence files, the mirror and a mistyped state."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest

from rfau.audit.trail import AuditTrail
from rfau.batch import run_batch
from rfau.data.datasets import load_dataset
from rfau.data.request_store import RequestState, RequestStore
from rfau.data.split import in_holdout, read_split
from rfau.params import BatchParams
from rfau.tracking import registry
from tests.support.cli import run_cli
from tests.support.services import S3_ENV

pytestmark = pytest.mark.e2e

DS = load_dataset("digits")
POOL = [s for s in DS.split_ids("train") if not in_holdout(s, 0.1)]
FAST = {"epochs": 3, "retain_budget": 300}  # as test_concurrency: passes the gates for 15-30 samples
R1, R2 = POOL[:25], POOL[25:50]


def _add(store: str, root: Path, rid: str, ids: list[str]) -> None:
    path = root / f"{rid}.json"
    path.write_text(
        json.dumps(
            {
                "request_id": rid,
                "sample_ids": ids,
                "reason": "GDPR art. 17",
                "subject": f"{rid}@example.com",
                "received_at": "2026-11-28T00:00:00Z",
            }
        )
    )
    RequestStore.open(store, create=True).add([path], DS)


class State:
    """One state folder, request store and registry; `rfau` in-process against it."""

    def __init__(self, root: Path, settings, **env: str):
        self.root, self.settings, self.store = root, settings, str(root / "store")
        self.env = {"RFAU_STATE_DIR": str(settings.state_dir), "RFAU_REQUEST_STORE": self.store, **env}
        self.n = 0

    def add(self, rid: str, ids: list[str]) -> None:
        _add(self.store, self.root, rid, ids)

    def batch(self):
        self.n += 1
        p = BatchParams(store=self.store, method_config=FAST)
        return run_batch(self.root / f"w{self.n}", p, self.settings)

    def rfau(self, *args: str):
        with contextlib.chdir(self.root):
            return run_cli(*args, **self.env)

    def reqs(self) -> RequestStore:
        return RequestStore.from_uri(self.store)

    def trail(self) -> AuditTrail:
        return AuditTrail.open(self.store, self.settings)

    def champion(self) -> int:
        return registry.Registry(self.settings).champion().version

    def frontier(self, version: int) -> set[str]:
        return registry.Registry(self.settings).frontier(version)


def _server_state(tmp_path, seed_state, mlflow_server, name: str) -> State:
    tracking = {"tracking_uri": mlflow_server["url"], "model_name": f"{name}-{tmp_path.name}"}
    settings = seed_state(tmp_path / ".rfau", **tracking)
    return State(
        tmp_path, settings, RFAU_TRACKING_URI=tracking["tracking_uri"], RFAU_MODEL_NAME=tracking["model_name"]
    )


def test_promote_and_rollback_refuse_a_version_holding_fulfilled_data_and_reopen_tells_the_truth(
    tmp_path, seed_state, mlflow_server
):
    s = _server_state(tmp_path, seed_state, mlflow_server, "frontier")
    s.add("req-1", R1)
    assert s.batch().registered.version == 2
    s.add("req-2", R2)
    assert s.batch().registered.version == 3

    # the original (trained on every deleted sample) and v2 (still knows req-2) are refused
    refused = s.rfau("promote", "1")
    assert refused.returncode == 2 and "req-1, req-2" in refused.stderr and "--reopen" in refused.stderr
    refused = s.rfau("rollback")
    assert refused.returncode == 2 and "req-2" in refused.stderr and "req-1" not in refused.stderr
    assert s.champion() == 3
    assert s.rfau("audit", "verify", "--no-weights").returncode == 0
    assert (s.frontier(1), s.frontier(2), s.frontier(3)) == (set(), {"req-1"}, {"req-1", "req-2"})
    tags = registry.Registry(s.settings).version_tags()
    assert json.loads(tags[3][registry.VersionTags.FRONTIER]) == ["req-1", "req-2"]

    # --reopen: v2 serves, req-2 goes back to pending with the reason, the ledger records the move
    moved = s.rfau("rollback", "--reopen", "--reason", "v3 misbehaves", "--json")
    assert moved.returncode == 0, moved.stderr
    move = json.loads(moved.stdout)
    assert move["champion"] == 2 and move["reopened"] == ["req-2"] and move["ledger_seq"] == 3
    st = s.reqs().get("req-2")
    assert st.state is RequestState.PENDING and "v3 misbehaves" in st.detail and "version 2" in st.detail
    record = s.trail().records()[-1]
    assert record["kind"] == "champion-move" and record["reopened"] == ["req-2"]
    assert record["model"]["after"]["version"] == 2 and record["model"]["before"]["version"] == 3
    ok = s.rfau("audit", "verify", "--no-weights")
    assert ok.returncode == 0, ok.stderr
    shown = s.rfau("audit", "show", "req-2")
    assert shown.returncode == 2 and "reopened by ledger record 3" in shown.stderr

    # the next batch starts from v2: only req-1's samples are "already deleted"; req-2's are forgotten
    # again (with a new request naming some of them), and the new version's frontier says so
    s.add("req-4", R2[:10] + POOL[50:55])
    out = s.batch()
    assert out.registered.promoted and out.request_ids == ["req-2", "req-4"] and s.champion() == 4
    split = read_split(s.root / f"w{s.n}" / "batch" / "split")
    assert set(split.excluded) == set(R1) and set(split.forget) == set(R2) | set(POOL[50:55])
    assert s.frontier(out.registered.version) == {"req-1", "req-2", "req-4"}
    assert s.rfau("audit", "verify", "--no-weights").returncode == 0

    # an alias moved outside rfau (the MLflow UI) to the original: the audit fails naming it
    reg = registry.Registry(s.settings)
    reg.client.set_registered_model_alias(reg.name, "champion", "1")
    bad = s.rfau("audit", "verify", "--no-weights")
    assert bad.returncode == 1
    assert "alias 'champion' (version 1) holds data of fulfilled request(s) req-1, req-2, req-4" in bad.stderr
    reg.client.set_registered_model_alias(reg.name, "champion", str(out.registered.version))

    # a request naming only samples the champion no longer holds: fulfilled with a ledger record,
    # the champion's frontier grows by it, and its proof shows
    s.add("req-6", R1[:5])
    done = s.batch()
    assert done.skipped and done.request_ids == ["req-6"]
    st = s.reqs().get("req-6")
    assert st.state is RequestState.FULFILLED and "already forgotten" in st.detail
    record = s.trail().records()[-1]
    assert record["kind"] == "already-forgotten" and record["request_ids"] == ["req-6"]
    assert "req-6" in s.frontier(out.registered.version)
    shown = s.rfau("audit", "show", "req-6")
    assert shown.returncode == 0, shown.stderr
    ok = s.rfau("audit", "verify", "--no-weights")
    assert ok.returncode == 0, ok.stderr


def test_a_deleted_champion_version_no_longer_blocks_every_batch(tmp_path, seed_state, mlflow_server):
    s = _server_state(tmp_path, seed_state, mlflow_server, "deleted")
    s.add("req-1", R1)
    assert s.batch().registered.version == 2
    reg = registry.Registry(s.settings)
    reg.client.delete_model_version(reg.name, "2")  # by hand, in the MLflow UI
    s.add("req-2", R2)
    blocked = s.rfau("batch", "run", "-w", str(s.root / "wx"), "--set", f"method_config={json.dumps(FAST)}")
    assert blocked.returncode == 3 and "rfau promote VERSION" in blocked.stderr, blocked.stderr
    assert s.reqs().get("req-2").state is RequestState.PENDING
    # the way out: promote a version; the original holds req-1's data, so it is reopened and recorded
    assert s.rfau("promote", "1").returncode == 2
    moved = s.rfau("promote", "1", "--reopen", "--reason", "version 2 was deleted", "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["reopened"] == ["req-1"]
    out = s.batch()
    assert out.registered.promoted and out.request_ids == ["req-1", "req-2"]
    assert s.champion() == out.registered.version == 3
    assert s.reqs().get("req-1").state is RequestState.FULFILLED
    verify = s.rfau("audit", "verify", "--no-weights")
    # the audit still says what was destroyed, and nothing else
    problems = [line for line in verify.stderr.splitlines() if "FAIL" in line]
    assert verify.returncode == 1 and len(problems) == 1 and "version 2 no longer exists" in problems[0]


# --- audit verify audits what it certifies (a local state with one batch) -------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory, seed_state):
    root = tmp_path_factory.mktemp("verify")
    s = State(root, seed_state(root / ".rfau"))
    s.add("req-1", R1)
    assert s.batch().registered.promoted
    return s


@contextlib.contextmanager
def _restored(*paths: Path):
    saved = {p: p.read_bytes() for p in paths if p.is_file()}
    try:
        yield
    finally:
        for p, data in saved.items():
            p.write_bytes(data)


def _fail_line(s: State, *args: str) -> str:
    done = s.rfau("audit", "verify", "--no-weights", *args)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stderr


def test_verify_fails_on_a_hand_written_or_deleted_request_event(local):
    assert local.rfau("audit", "verify", "--no-weights").returncode == 0
    events = Path(local.store) / "requests"
    local.add("req-9", POOL[80:85])
    forged = events / "req-9" / "events" / "000001-fulfilled.json"
    forged.write_text(json.dumps({"state": "fulfilled", "at": "2026-12-01T00:00:00+00:00", "batch_id": "x"}))
    try:
        assert "request req-9 is fulfilled but no ledger record fulfils it" in _fail_line(local)
    finally:
        forged.unlink()
        shutil.rmtree(events / "req-9")
    done = sorted((events / "req-1" / "events").glob("*-fulfilled.json"))[0]
    with _restored(done):
        done.unlink()
        assert "request req-1 is in-progress but ledger record 1 fulfils it" in _fail_line(local)
    claimed = sorted((events / "req-1" / "events").glob("*-in-progress.json"))[0]
    with _restored(claimed):
        claimed.unlink()
        assert "not consecutive (an event was deleted)" in _fail_line(local)
    assert local.rfau("audit", "verify", "--no-weights").returncode == 0


def test_verify_and_show_fail_on_an_edited_evidence_file_and_a_deleted_mirror(local):
    batch = local.trail().records()[0]["batch_id"]
    copies = [
        Path(local.store) / "audit" / "evidence" / batch / "metrics.json",
        local.settings.state_dir / "audit" / "evidence" / batch / "metrics.json",
    ]
    for f in copies:
        with _restored(f):
            f.write_bytes(f.read_bytes() + b" ")
            assert f"{f} differs from its hash in the record (edited)" in _fail_line(local)
            shown = local.rfau("audit", "show", "req-1")
            assert shown.returncode == 1 and "differs from its hash" in shown.stderr
    mirror = local.trail().mirror
    with _restored(mirror):
        mirror.unlink()
        assert f"the local copy {mirror} of the ledger is missing" in _fail_line(local)
    assert local.rfau("audit", "verify", "--no-weights").returncode == 0


def test_a_mistyped_state_or_store_is_an_error_and_nothing_is_created(local, tmp_path, s3_server):
    with contextlib.chdir(tmp_path):
        typo = run_cli("audit", "verify", RFAU_STATE_DIR=str(tmp_path / ".rfua"))
        assert typo.returncode == 2 and typo.stderr.count("\n") == 1 and ".rfua" in typo.stderr
        store = run_cli(
            "audit",
            "verify",
            RFAU_STATE_DIR=str(local.settings.state_dir),
            RFAU_REQUEST_STORE=str(tmp_path / "st"),
        )
        assert store.returncode == 2 and "never been initialised" in store.stderr
        listed = run_cli("request", "list", "--store", str(tmp_path / "st"))
        assert listed.returncode == 2 and listed.stdout == "" and "never been initialised" in listed.stderr
        s3 = {**S3_ENV, "AWS_ENDPOINT_URL": s3_server["endpoint"], "RFAU_AUDIT_SALT": "s"}
        prefix = f"s3://{s3_server['bucket']}/no-such-prefix-{tmp_path.name}"
        typo = run_cli(
            "audit", "verify", RFAU_STATE_DIR=str(local.settings.state_dir), RFAU_REQUEST_STORE=prefix, **s3
        )
        assert (
            typo.returncode == 2 and "never been initialised" in typo.stderr and "intact" not in typo.stdout
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no sqlite store, no folder
