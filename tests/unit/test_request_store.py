"""Storage (local folder and S3 on moto's server) and the deletion-request lifecycle on top of it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from rfau.data.datasets import load_dataset
from rfau.data.request_store import RequestState, RequestStore
from rfau.errors import RequestError, RfauError
from rfau.storage import AlreadyExists, LocalStore, NotFound, S3Store, open_store
from tests.support.services import S3_ENV, free_port, stop

_ENDPOINT_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _clean_aws_env(monkeypatch, tmp_path) -> None:
    for var in (*_ENDPOINT_VARS, "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    # no user config and no instance-metadata look-ups: only what the test sets counts
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws_env(monkeypatch, tmp_path, s3_server):
    _clean_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint"])
    return s3_server


@pytest.fixture(params=["local", "s3"])
def uri(request, tmp_path):
    """A fresh, empty store location: a folder, or a new prefix in the moto bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    s3 = request.getfixturevalue("aws_env")
    return f"s3://{s3['bucket']}/test-request-store/{uuid.uuid4().hex}"


def req(
    rid: str, *, sample_ids=("digits/1",), classes=(), received_at="2026-11-27T10:00:00Z", **extra
) -> dict:
    return {
        "request_id": rid,
        "sample_ids": list(sample_ids),
        "classes": list(classes),
        "reason": "GDPR art. 17",
        "received_at": received_at,
        **extra,
    }


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# -- Store ---------------------------------------------------------------------------------------


def test_store_put_get_list_delete(uri):
    store = open_store(uri)
    assert isinstance(store, S3Store if uri.startswith("s3://") else LocalStore)
    assert store.list() == [] and not store.exists("a/b.json")
    store.put_bytes("a/b.json", b"1")
    store.put_bytes("a/b.json", b"2")  # plain put overwrites
    store.put_bytes("a/c/d.bin", b"\x00\xff")
    store.put_bytes("ab.txt", b"x")
    assert store.get_bytes("a/b.json") == b"2" and store.get_bytes("a/c/d.bin") == b"\x00\xff"
    assert store.exists("a/b.json") and not store.exists("a/c")
    assert store.list() == ["a/b.json", "a/c/d.bin", "ab.txt"]
    assert store.list("a/") == ["a/b.json", "a/c/d.bin"]
    assert store.list("a") == ["a/b.json", "a/c/d.bin", "ab.txt"]  # a plain string prefix, as in S3
    assert store.list("a/c/d") == ["a/c/d.bin"] and store.list("zz/") == []
    with pytest.raises(AlreadyExists, match="a/b.json already exists"):
        store.put_bytes("a/b.json", b"3", exclusive=True)
    assert store.get_bytes("a/b.json") == b"2"
    store.put_bytes("a/new.json", b"n", exclusive=True)
    assert store.get_bytes("a/new.json") == b"n"
    store.delete("a/c/d.bin")
    store.delete("a/c/d.bin")  # deleting a missing key is fine
    with pytest.raises(NotFound, match=r"a/c/d\.bin does not exist") as e:
        store.get_bytes("a/c/d.bin")
    assert store.uri in str(e.value)
    assert store.list() == ["a/b.json", "a/new.json", "ab.txt"]


def test_s3_server_honours_if_none_match(aws_env):
    """moto's server rejects a second conditional create: S3 exclusive puts need no fallback."""
    store = open_store(f"s3://{aws_env['bucket']}/inm-{uuid.uuid4().hex}")
    store.put_bytes("k", b"first", exclusive=True)
    with pytest.raises(AlreadyExists):
        store.put_bytes("k", b"second", exclusive=True)
    assert store.get_bytes("k") == b"first"


@pytest.mark.parametrize("key", ["..", "../x", "a/../b", "/abs", "a\\b", "a//b", "", ".", "a/./b", "C:/x"])
def test_bad_keys_rejected(uri, key):
    store = open_store(uri)
    for call in (
        lambda: store.put_bytes(key, b""),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(RfauError, match="invalid store key"):
            call()
    if key:
        with pytest.raises(RfauError, match="invalid store key"):
            store.list(key)
    assert store.list() == []


def test_open_store_forms(tmp_path, aws_env):
    assert open_store(tmp_path).root == tmp_path
    assert open_store(f"file://{tmp_path}/x").root == tmp_path / "x"
    assert open_store(str(tmp_path / "y")).uri == str(tmp_path / "y")
    assert not (tmp_path / "y").exists()  # created on the first write
    s3 = open_store("s3://bucket-name/some/prefix/")
    assert (s3.bucket, s3.prefix, s3.uri) == ("bucket-name", "some/prefix", "s3://bucket-name/some/prefix")
    for bad in ("gs://b/x", "s3:///x", "file://host/x", "s3://b/../x", ""):
        with pytest.raises(RfauError):
            open_store(bad)


def test_local_put_is_atomic_and_leaves_no_temp_files(tmp_path):
    store = LocalStore(tmp_path / "s")
    old, new = b"o" * 2_000_000, b"n" * 2_000_000
    store.put_bytes("big", old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(store.get_bytes("big"))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(20):
        store.put_bytes("big", new if i % 2 == 0 else old)
    stop.set()
    t.join()
    assert seen <= {old, new}  # never a partly written object
    with pytest.raises(AlreadyExists):
        store.put_bytes("big", b"x", exclusive=True)
    files = [Path(d, f).relative_to(tmp_path / "s").as_posix() for d, _, fs in os.walk(tmp_path) for f in fs]
    assert files == ["big"] and store.list() == ["big"]


def test_local_exclusive_create_races(tmp_path):
    store = LocalStore(tmp_path)
    wins = []

    def go(i):
        try:
            store.put_bytes("slot", str(i).encode(), exclusive=True)
            wins.append(i)
        except AlreadyExists:
            pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(go, range(32)))
    assert len(wins) == 1 and store.get_bytes("slot") == str(wins[0]).encode()


def test_s3_list_is_paginated(aws_env):
    store = open_store(f"s3://{aws_env['bucket']}/many-{uuid.uuid4().hex}")
    keys = [f"k/{i:05d}" for i in range(1010)]  # more than one page of 1000
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put_bytes(k, b""), keys))
    assert store.list("k/") == keys


# -- S3 failures become clear RfauErrors, fast ---------------------------------------------------


def test_s3_missing_bucket(aws_env):
    store = open_store("s3://rfau-no-such-bucket/x")
    t0 = time.monotonic()
    for call in (
        store.list,
        lambda: store.get_bytes("k"),
        lambda: store.exists("k"),
        lambda: store.put_bytes("k", b""),
        lambda: store.put_bytes("k", b"", exclusive=True),
        RequestStore(store).list,
    ):
        with pytest.raises(RfauError, match="bucket 'rfau-no-such-bucket' does not exist") as e:
            call()
        assert "s3://rfau-no-such-bucket/x" in str(e.value) and not isinstance(e.value, NotFound)
    assert time.monotonic() - t0 < 5


def test_s3_unreachable_endpoint(monkeypatch, tmp_path):
    _clean_aws_env(monkeypatch, tmp_path)
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    rs = RequestStore.from_uri("s3://rfau-artifacts/req")
    t0 = time.monotonic()
    with pytest.raises(RfauError, match=rf"S3 endpoint http://127.0.0.1:{port} unreachable") as e:
        rs.list()
    assert "s3://rfau-artifacts/req" in str(e.value)
    with pytest.raises(RfauError, match="unreachable"):
        rs.store.put_bytes("k", b"", exclusive=True)
    assert time.monotonic() - t0 < 10


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until the server accepts connections (with auth on, every HTTP answer is an error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"moto server exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto server on port {port} did not start within {timeout} s")


def test_s3_bad_credentials(monkeypatch, tmp_path):
    """A moto server that checks signatures: an unknown access key is 'access denied', named."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **S3_ENV, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
    )
    try:
        _wait_port(port, proc)
        _clean_aws_env(monkeypatch, tmp_path)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        store = open_store("s3://some-bucket/p")
        with pytest.raises(
            RfauError, match=r"cannot list s3://some-bucket/p.*access denied \(InvalidAccessKeyId"
        ):
            store.list()
        with pytest.raises(RfauError, match="access denied"):
            store.put_bytes("k", b"x", exclusive=True)
    finally:
        stop(proc)


def test_s3_endpoint_from_mlflow_variable(monkeypatch, tmp_path, s3_server):
    _clean_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server["endpoint"])
    store = open_store(f"s3://{s3_server['bucket']}/mlflow-var-{uuid.uuid4().hex}")
    assert store.endpoint == s3_server["endpoint"]
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # boto3's own setting wins
    with pytest.raises(RfauError, match="unreachable"):
        open_store(f"s3://{s3_server['bucket']}/x").list()


# -- RequestStore lifecycle ----------------------------------------------------------------------


def test_add_list_get_and_layout(uri, tmp_path, digits):
    rs = RequestStore.from_uri(uri)
    assert rs.list() == []
    files = tmp_path / "in"
    write(files / "a.json", [req("late", received_at="2026-11-28T00:00:00Z"), req("b-2")])
    write(files / "b.json", req("a-1", classes=["3"], sample_ids=[]))
    assert rs.add([files], dataset=digits) == ["late", "b-2", "a-1"]
    listed = rs.list()
    assert [s.request_id for s in listed] == ["a-1", "b-2", "late"]  # received_at, then id
    assert {s.state for s in listed} == {RequestState.PENDING}
    st_ = rs.get("a-1")
    assert (st_.state, st_.batch_id, st_.detail) == ("pending", None, "received")
    assert st_.request.classes == ["3"] and st_.updated_at.endswith("+00:00")
    assert [h["state"] for h in st_.history] == ["pending"]
    assert rs.requests(RequestState.PENDING)[0].request_id == "a-1"
    assert rs.list(RequestState.IN_PROGRESS) == []

    claimed = rs.claim_pending("batch-1")
    assert [s.request_id for s in claimed] == ["a-1", "b-2", "late"]
    assert all(s.state == RequestState.IN_PROGRESS and s.batch_id == "batch-1" for s in claimed)
    assert rs.claim_pending("batch-2") == []
    keys = rs.store.list("requests/a-1/")
    assert keys == [
        "requests/a-1/events/000000-pending.json",
        "requests/a-1/events/000001-in-progress.json",
        "requests/a-1/request.json",
    ]
    event = json.loads(rs.store.get_bytes(keys[1]))
    assert set(event) == {"state", "at", "batch_id", "detail"}
    assert (event["state"], event["batch_id"]) == ("in-progress", "batch-1")
    assert json.loads(rs.store.get_bytes(keys[2]))["classes"] == ["3"]
    with pytest.raises(RequestError, match="request 'nope' is not in"):
        rs.get("nope")
    with pytest.raises(RequestError, match="not a valid request id"):
        rs.get("../etc")


def test_duplicate_id_rejected_with_nothing_written(uri, tmp_path):
    rs = RequestStore.from_uri(uri)
    rs.add([write(tmp_path / "1.json", req("r1"))])
    rs.claim_pending("b1")
    before = rs.store.list()
    with pytest.raises(
        RequestError, match=r"2\.json\[1\]: request 'r1': request id already in .*in-progress"
    ):
        rs.add([write(tmp_path / "2.json", [req("r2"), req("r1")])])
    assert rs.store.list() == before
    with pytest.raises(RequestError, match="'r3': request id already used in"):  # twice in one batch of files
        rs.add([write(tmp_path / "3.json", [req("r3"), req("r3")])])
    assert rs.store.list() == before


def test_bad_request_among_good_writes_nothing(uri, tmp_path, digits):
    rs = RequestStore.from_uri(uri)
    folder = tmp_path / "reqs"
    write(folder / "1.json", req("good-1"))
    bad = {k: v for k, v in req("bad").items() if k != "reason"}
    write(folder / "2.json", bad)
    write(folder / "3.json", req("good-2"))
    with pytest.raises(RequestError, match=r"2\.json: request 'bad': reason"):
        rs.add([folder])
    write(folder / "2.json", req("bad", sample_ids=["digits/3", "digits/999999"]))
    with pytest.raises(RequestError, match=r"2\.json: request 'bad': 1 unknown sample ids"):
        rs.add([folder], dataset=digits)
    assert rs.store.list() == [] and rs.list() == []
    assert rs.add([folder]) == ["good-1", "bad", "good-2"]  # form alone is fine without a dataset


def test_validation_against_digits_names_the_request(uri, tmp_path, digits):
    rs = RequestStore.from_uri(uri)
    cases = {
        "unknown-id": (["digits/100000"], "unknown sample ids"),
        "test-split": (["digits/0", "digits/1"], "in the test split"),  # index % 5 == 0 is test
        "traversal": (["../digits/1"], "rejected"),
    }
    for rid, (ids, why) in cases.items():
        with pytest.raises(RequestError, match=rf"{rid}\.json: request '{rid}': .*{why}"):
            rs.add([write(tmp_path / f"{rid}.json", req(rid, sample_ids=ids))], dataset=digits)
    with pytest.raises(RequestError, match="request 'cls': unknown classes"):
        rs.add([write(tmp_path / "cls.json", req("cls", sample_ids=[], classes=["ten"]))], dataset=digits)
    assert rs.store.list() == []


def test_fulfil_reject_release_and_illegal_moves(uri, tmp_path):
    rs = RequestStore.from_uri(uri)
    rs.add([write(tmp_path / "r.json", [req(f"r{i}") for i in range(4)])])
    with pytest.raises(RequestError, match=r"cannot fulfil request 'r0' for batch 'b1': it is pending"):
        rs.fulfil("r0", "b1", "done")
    rs.claim_pending("b1")
    with pytest.raises(
        RequestError,
        match=r"cannot fulfil request 'r0' for batch 'b2': it is in-progress "
        r"for batch 'b1'",
    ):
        rs.fulfil("r0", "b2", "done")
    with pytest.raises(RequestError, match="batch 'b2'.*in-progress for batch 'b1'"):
        rs.reject("r0", "b2", "no")
    with pytest.raises(RequestError, match="batch id must be a non-empty string"):
        rs.release("r0", "", "x")

    done = rs.fulfil("r0", "b1", "model v3")
    assert (done.state, done.batch_id, done.detail) == (RequestState.FULFILLED, "b1", "model v3")
    assert rs.reject("r1", "b1", "sample already gone").state == RequestState.REJECTED
    back = rs.release("r2", "b1", "new model failed its gates")
    assert (back.state, back.detail) == (RequestState.PENDING, "new model failed its gates")
    assert [h["state"] for h in back.history] == ["pending", "in-progress", "pending"]

    for call, word in (
        (lambda: rs.release("r0", "b1", "x"), "release request 'r0'.*it is fulfilled"),
        (lambda: rs.fulfil("r1", "b1", "x"), "fulfil request 'r1'.*it is rejected"),
        (lambda: rs.reject("r2", "b1", "x"), "reject request 'r2'.*it is pending"),
        (lambda: rs.fulfil("zz", "b1", "x"), "request 'zz' is not in"),
    ):
        with pytest.raises(RequestError, match=word):
            call()

    again = rs.claim_pending("b2")  # the released one comes back; r3 is still held by b1
    assert [s.request_id for s in again] == ["r2"]
    assert [h["state"] for h in again[0].history] == ["pending", "in-progress", "pending", "in-progress"]
    assert {s.request_id: s.state.value for s in rs.list()} == {
        "r0": "fulfilled",
        "r1": "rejected",
        "r2": "in-progress",
        "r3": "in-progress",
    }
    assert rs.get("r3").batch_id == "b1" and rs.get("r2").batch_id == "b2"
    assert [r.request_id for r in rs.requests(RequestState.IN_PROGRESS)] == ["r2", "r3"]


def test_concurrent_claims_take_each_request_once(uri, tmp_path):
    RequestStore.from_uri(uri).add([write(tmp_path / "r.json", [req(f"r{i:02d}") for i in range(16)])])
    workers = [RequestStore.from_uri(uri) for _ in range(4)]  # separate stores (and S3 clients)
    start = threading.Barrier(len(workers))
    results: dict[str, list[str]] = {}

    def claim(i):
        start.wait()
        results[f"w{i}"] = [s.request_id for s in workers[i].claim_pending(f"w{i}")]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [rid for ids in results.values() for rid in ids]
    assert sorted(claimed) == [f"r{i:02d}" for i in range(16)]  # every one, exactly once
    final = workers[0].list()
    for s in final:
        assert s.state == RequestState.IN_PROGRESS and s.request_id in results[s.batch_id]
        assert [h["state"] for h in s.history] == ["pending", "in-progress"]


# -- a random walk of legal and illegal moves matches a plain model (local store) ---------------

IDS = ["a", "b", "c"]
BATCHES = ["b1", "b2"]


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="rfau-rs-"))
        self.rs = RequestStore(LocalStore(self.dir / "store"))
        self.model: dict[str, tuple[str, str | None]] = {}  # id -> (state, holding batch)
        self.n = 0

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(rid=st.sampled_from(IDS))
    def add(self, rid):
        self.n += 1
        path = write(self.dir / f"in{self.n}.json", req(rid))
        if rid in self.model:
            with pytest.raises(RequestError, match=f"'{rid}': request id already in"):
                self.rs.add([path])
        else:
            assert self.rs.add([path]) == [rid]
            self.model[rid] = ("pending", None)

    @rule(batch=st.sampled_from(BATCHES))
    def claim(self, batch):
        expected = sorted(r for r, (s, _) in self.model.items() if s == "pending")
        assert sorted(s.request_id for s in self.rs.claim_pending(batch)) == expected
        for r in expected:
            self.model[r] = ("in-progress", batch)

    @rule(
        op=st.sampled_from(["fulfil", "reject", "release"]),
        rid=st.sampled_from(IDS),
        batch=st.sampled_from(BATCHES),
    )
    def move(self, op, rid, batch):
        state, holder = self.model.get(rid, (None, None))
        if state == "in-progress" and holder == batch:
            status = getattr(self.rs, op)(rid, batch, "why")
            new = {"fulfil": "fulfilled", "reject": "rejected", "release": "pending"}[op]
            assert status.state.value == new
            self.model[rid] = (new, batch if new == "in-progress" else None)
        else:
            with pytest.raises(RequestError, match=f"'{rid}'"):
                getattr(self.rs, op)(rid, batch, "why")

    @invariant()
    def store_matches_model(self):
        got = {
            s.request_id: (s.state.value, s.batch_id if s.state == RequestState.IN_PROGRESS else None)
            for s in self.rs.list()
        }
        assert got == self.model


TestLifecycleMachine = LifecycleMachine.TestCase
TestLifecycleMachine.settings = settings(
    max_examples=60, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_operator_moves_and_store_marker(tmp_path, monkeypatch):
    import json as _json

    from rfau.data.request_store import RequestState, RequestStore, stale_after_hours
    from rfau.errors import RequestError, RfauError

    with pytest.raises(RfauError, match="never been initialised"):
        RequestStore.open(tmp_path / "store")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RfauError, match="is a file"):
        RequestStore.open(tmp_path / "afile")
    store = RequestStore.open(tmp_path / "store", create=True)
    assert RequestStore.open(tmp_path / "store").initialised()
    for rid in ("a", "b", "c"):
        f = tmp_path / f"{rid}.json"
        body = {"request_id": rid, "classes": ["0"], "reason": "gdpr", "received_at": "2026-01-01T00:00:00Z"}
        f.write_text(_json.dumps(body))
        store.add([f])
    assert store.cancel("a").state == RequestState.CANCELLED
    with pytest.raises(RequestError, match="cancelled, not pending"):
        store.cancel("a")
    claimed = {st.request_id for st in store.claim_pending("b1")}
    assert claimed == {"b", "c"}
    assert store.stale_in_progress(1.0) == []
    assert {st.request_id for st in store.stale_in_progress(0.0)} == {"b", "c"}
    assert store.operator_release("b").state == RequestState.PENDING
    with pytest.raises(RequestError, match="not in-progress"):
        store.release("b", "b1", "late")  # the batch lost its claim
    assert store.operator_reject("b", "not our data").state == RequestState.REJECTED
    assert [st.request_id for st in store.release_stale(0.0)] == ["c"]
    monkeypatch.setenv("RFAU_STALE_AFTER_HOURS", "soon")
    with pytest.raises(RfauError, match="RFAU_STALE_AFTER_HOURS"):
        stale_after_hours()


def test_release_all_names_both_failures(tmp_path):
    from rfau.data.request_store import RequestStore
    from rfau.errors import RfauError

    store = RequestStore.open(tmp_path / "s", create=True)
    with pytest.raises(RfauError, match=r"failed \(disk full\) and releasing its requests failed too"):
        store.release_all(["nope"], "b1", "disk full")
