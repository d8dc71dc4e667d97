"""Deletion requests end to end: three scheduled batches over time from the current champion,
a rejected request, a gate failure that leaves the champion alone, the audit ledger verified
against the registry, and 1,000 mutations of the real ledger each detected."""

from __future__ import annotations

import json
import random
import time

import pytest

from rfau.audit.ledger import canonical, record_hash, verify_bytes
from rfau.audit.proof import render_proof
from rfau.audit.trail import LEDGER_KEY, AuditTrail
from rfau.batch import BatchContext, data_split, run_batch
from rfau.data.datasets import load_dataset
from rfau.data.request_store import RequestState, RequestStore
from rfau.data.split import in_holdout, read_split
from rfau.gates import Gates
from rfau.params import BatchParams
from rfau.tracking import registry
from rfau.tracking.settings import TrackingSettings

DS = load_dataset("digits")
POOL = [s for s in DS.split_ids("train") if not in_holdout(s, 0.1)]
FAST = {"epochs": 10, "retain_budget": 1000}  # RFAU settings: enough on digits, quick on 2 cores


def _request(path, rid, ids, subject):
    path.write_text(
        json.dumps(
            {
                "request_id": rid,
                "sample_ids": ids,
                "reason": "GDPR art. 17",
                "received_at": "2026-11-27T10:00:00Z",
                "subject": subject,
            }
        )
    )
    return path


pytestmark = pytest.mark.e2e  # slow: its file is scheduled first


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, seed_state):
    root = tmp_path_factory.mktemp("batches")
    # version 1: the bootstrap original the first batch would train (the session's copy: training it
    # inside a batch is what the new-user pipeline run covers, tests/e2e/test_pipeline_local.py)
    settings = seed_state(root / ".rfau")
    store = str(root / "store")
    reqs = RequestStore.from_uri(store)
    rng = random.Random(7)
    picks = rng.sample(POOL, 90)
    r1, r2, r3 = picks[:30], picks[30:60], picks[60:]
    out = {
        "root": root,
        "settings": settings,
        "store": store,
        "reqs": reqs,
        "ids": {"r1": r1, "r2": r2, "r3": r3},
        "runs": [],
    }

    def batch(n, gates=None):
        t0 = time.time()
        res = run_batch(
            root / f"b{n}",
            # one rung: these batches test RFAU's own verdicts (the ladder: tests/e2e/test_ladder.py)
            BatchParams(store=store, method_config=FAST, gates=gates or Gates(), escalation=["rfau"]),
            settings,
        )
        out["runs"].append((res, time.time() - t0))
        return res

    # batch 1: a good request and one that names an unknown sample (queued without a dataset check)
    reqs.add([_request(root / "r1.json", "r1", r1, "alice@example.com")], DS)
    reqs.add([_request(root / "bad.json", "bad", ["digits/999999"], "mallory")])
    batch(1)
    # batch 2: the new model fails a gate that cannot pass (forget error must equal test error exactly)
    reqs.add([_request(root / "r2.json", "r2", r2, "bob@example.com")], DS)
    batch(2, Gates(max_forget_error_gap_samplewise=0.0, widen_to_sample_step=False))
    # batch 3: r2 (back to pending) and r3 together, normal gates
    reqs.add([_request(root / "r3.json", "r3", r3, "carol@example.com")], DS)
    batch(3)
    return out


def test_three_batches_three_versions_champion_moves_only_on_passing_gates(scenario):
    (b1, _), (b2, _), (b3, _) = scenario["runs"]
    b1, b2, b3 = (b.registered for b in (b1, b2, b3))
    assert (b1.version, b2.version, b3.version) == (2, 3, 4)  # version 1: the bootstrap original
    assert b1.gates_passed and b1.champion == 2
    assert not b2.gates_passed and b2.champion == 2  # the champion did not move
    assert b3.gates_passed and b3.champion == 4
    assert b3.request_ids == ["r2", "r3"]  # r2 waited for the next batch and went with r3
    tags = registry.Registry(scenario["settings"]).version_tags()
    assert sorted(tags) == [1, 2, 3, 4]
    assert tags[3]["rfau.gates_passed"] == "false" and "forget_error_gap" in tags[3]["rfau.gate_failures"]
    # every batch started from the champion of its time
    assert json.loads((scenario["root"] / "b2" / "batch" / "batch.json").read_text())["base"]["version"] == 2
    assert json.loads((scenario["root"] / "b3" / "batch" / "batch.json").read_text())["base"]["version"] == 2


def test_request_states_follow_the_batches(scenario):
    reqs = scenario["reqs"]
    assert reqs.get("bad").state is RequestState.REJECTED and "unknown sample ids" in reqs.get("bad").detail
    assert scenario["runs"][0][0].rejected[0].request_id == "bad"
    for rid, version in (("r1", 2), ("r2", 4), ("r3", 4)):
        st = reqs.get(rid)
        assert st.state is RequestState.FULFILLED and f"version {version}" in st.detail
    states = [e["state"] for e in reqs.get("r2").history]
    assert states == ["pending", "in-progress", "pending", "in-progress", "fulfilled"]
    assert "failed gates" in reqs.get("r2").history[2]["detail"]


def test_forgotten_samples_stay_out_and_stay_forgotten(scenario):
    ids = scenario["ids"]
    s2 = read_split(scenario["root"] / "b2" / "batch" / "split")
    s3 = read_split(scenario["root"] / "b3" / "batch" / "split")
    assert set(s2.excluded) == set(ids["r1"]) and set(s3.excluded) == set(ids["r1"])
    assert set(s3.forget) == set(ids["r2"]) | set(ids["r3"])
    for s in (s2, s3):
        assert not set(s.retain) & set(ids["r1"]) and not set(s.holdout) & set(ids["r1"])
    after = json.loads((scenario["root"] / "b3" / "evaluation" / "after.json").read_text())
    # r1's samples look like unseen data to the model of batch 3: error and MIA near the test set's
    assert abs(after["ua_excluded"] - (100 - after["ta"])) <= 5.0
    assert abs(after["mia_confidence_excluded"] - after["mia_confidence_test"]) <= 10.0


def test_ledger_verifies_and_records_the_evidence(scenario):
    trail = AuditTrail.open(scenario["store"], scenario["settings"])
    assert trail.verify() == []
    records = trail.records()
    assert [r["seq"] for r in records] == [1, 2, 3]
    r1 = records[0]
    assert r1["request_ids"] == ["r1"] and r1["rejected"] == ["bad"]
    assert "alice" not in json.dumps(records)  # subjects only as salted hashes
    split_dir = scenario["root"] / "b1" / "batch" / "split"
    import hashlib

    assert r1["forget_md5"] == hashlib.md5((split_dir / "forget.txt").read_bytes()).hexdigest()
    assert r1["model"]["before"]["version"] == 1 and r1["model"]["after"]["version"] == 2
    assert records[1]["gates_passed"] is False and records[1]["promoted"] is False
    md, html = render_proof(records[2], "r2", trail.evidence_dir(records[2]["batch_id"]))
    assert "r2" in md and "data:image/png;base64," in html
    # the local copy and the object store's are the same bytes
    assert trail.mirror.read_bytes() == trail.store.get_bytes(LEDGER_KEY)


def _mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    lines = data.decode().splitlines(keepends=True)
    kind = rng.choice(
        [
            "byte",
            "insert_byte",
            "delete_byte",
            "edit",
            "edit_rehash",
            "remove",
            "truncate",
            "swap",
            "duplicate",
        ]
    )
    if kind == "byte":
        i = rng.randrange(len(data))
        return kind, data[:i] + bytes([(data[i] + rng.randrange(1, 256)) % 256]) + data[i + 1 :]
    if kind == "insert_byte":
        i = rng.randrange(len(data) + 1)
        return kind, data[:i] + bytes([rng.randrange(256)]) + data[i:]
    if kind == "delete_byte":
        i = rng.randrange(len(data))
        return kind, data[:i] + data[i + 1 :]
    recs = [json.loads(ln) for ln in lines]
    i = rng.randrange(len(recs))
    if kind in ("edit", "edit_rehash"):
        recs[i]["metrics"]["ua"] = recs[i]["metrics"].get("ua", 0) + rng.choice([0.01, 1, 50])
        if kind == "edit_rehash":
            recs[i]["hash"] = record_hash(recs[i])
    elif kind == "remove":
        del recs[i]
    elif kind == "truncate":
        recs = recs[:-1]
    elif kind == "swap":
        j = (i + rng.randrange(1, len(recs))) % len(recs)
        recs[i], recs[j] = recs[j], recs[i]
    elif kind == "duplicate":
        recs.insert(i, dict(recs[i]))
    return kind, b"".join(canonical(r) + b"\n" for r in recs)


def test_a_thousand_mutations_of_the_ledger_are_each_detected(scenario):
    trail = AuditTrail.open(scenario["store"], scenario["settings"])
    data = trail.ledger_bytes()
    tags = registry.Registry(scenario["settings"]).version_tags()
    anchors = [
        {"seq": int(t["rfau.ledger_seq"]), "hash": t["rfau.ledger_hash"]}
        for t in tags.values()
        if "rfau.ledger_seq" in t
    ]
    assert len(anchors) == 3 and verify_bytes(data, anchors) == []
    rng = random.Random(2026)
    kinds: dict[str, int] = {}
    for _ in range(1000):
        kind, bad = _mutate(data, rng)
        assert bad != data
        assert verify_bytes(bad, anchors), f"undetected {kind} mutation"
        kinds[kind] = kinds.get(kind, 0) + 1
    print("mutations detected:", kinds)
    assert sum(kinds.values()) == 1000


def test_verify_catches_a_stale_copy_and_swapped_weights(scenario, tmp_path):
    import shutil

    settings, store = scenario["settings"], scenario["store"]
    trail = AuditTrail.open(store, settings)
    mirror = trail.mirror.read_bytes()
    try:
        trail.mirror.write_bytes(mirror.replace(b'"seq":3', b'"seq":4'))
        assert any("local copy" in p for p in trail.verify(check_weights=False))
    finally:
        trail.mirror.write_bytes(mirror)
    # someone replaces the weights of the champion in the artifact store
    weights = sorted((settings.state_dir / "mlartifacts").rglob("model.safetensors"))
    v4 = [
        w
        for w in weights
        if registry.Registry(settings).version_tags()[4]["rfau.weights_sha256"]
        == __import__("rfau.io", fromlist=["sha256_file"]).sha256_file(w)
    ]
    assert v4
    backup = tmp_path / "w"
    shutil.copy(v4[0], backup)
    try:
        v4[0].write_bytes(v4[0].read_bytes()[:-8] + b"\x00" * 8)
        problems = trail.verify()
        assert any("version 4" in p for p in problems), problems
    finally:
        shutil.copy(backup, v4[0])
    assert trail.verify() == []


def test_nothing_pending_exits_at_once(scenario):
    t0 = time.time()
    res = run_batch(scenario["root"] / "b4", BatchParams(store=scenario["store"]), scenario["settings"])
    assert res.skipped and res.request_ids == []
    assert sorted(registry.Registry(scenario["settings"]).version_tags()) == [1, 2, 3, 4]
    assert len(AuditTrail.open(scenario["store"], scenario["settings"]).records()) == 3
    print(f"empty batch: {time.time() - t0:.1f} s")


def test_a_failed_split_puts_the_requests_back(tmp_path):
    from rfau.errors import RfauError

    settings = TrackingSettings(state_dir=tmp_path / ".rfau", tracking_uri="http://127.0.0.1:9")
    store = str(tmp_path / "store")
    RequestStore.from_uri(store).add([_request(tmp_path / "r.json", "r9", POOL[:5], "dave")], DS)
    with pytest.raises(RfauError, match="unreachable"):  # the base's frontier is read before claiming
        data_split(tmp_path / "batch", "digits", BatchContext.open(store, settings))
    st = RequestStore.from_uri(store).get("r9")
    assert st.state is RequestState.PENDING and [e["state"] for e in st.history] == ["pending"]
    assert not (tmp_path / "batch").exists()


def test_audit_cli_verifies_shows_and_fails_on_tampering(scenario, tmp_path):
    import contextlib

    from tests.support.cli import run_cli

    env = {"RFAU_STATE_DIR": str(scenario["settings"].state_dir), "RFAU_REQUEST_STORE": scenario["store"]}

    def run(*args):
        with contextlib.chdir(tmp_path):
            return run_cli(*args, **env)

    ok = run("audit", "verify", "--no-weights")
    assert ok.returncode == 0 and "ledger intact: 3 record(s)" in ok.stdout, ok.stderr
    shown = run("audit", "show", "r3", "--out", str(tmp_path / "proof"))
    assert shown.returncode == 0, shown.stderr
    assert "r3" in (tmp_path / "proof" / "proof.md").read_text()
    assert "data:image/png;base64," in (tmp_path / "proof" / "proof.html").read_text()
    missing = run("audit", "show", "bad")  # rejected: in no record
    assert missing.returncode == 2 and "no ledger record" in missing.stderr
    listed = run("request", "list", "--state", "rejected", "--json")
    assert '"bad"' in listed.stdout and "unknown sample ids" in listed.stdout
    trail = AuditTrail.open(scenario["store"], scenario["settings"])
    data = trail.ledger_bytes()
    try:
        trail.store.put_bytes(LEDGER_KEY, data.replace(b'"r1"', b'"r0"', 1))
        bad = run("audit", "verify", "--no-weights")
        assert bad.returncode == 1 and "FAIL" in bad.stderr
    finally:
        trail.store.put_bytes(LEDGER_KEY, data)
    assert run("audit", "verify", "--no-weights").returncode == 0


def test_requests_left_in_progress_by_a_dead_batch_are_taken_up_again(tmp_path, seed_state):
    settings = seed_state(tmp_path / ".rfau")
    store = str(tmp_path / "store")
    reqs = RequestStore.from_uri(store)
    reqs.add([_request(tmp_path / "r.json", "r8", POOL[:6], "frank")], DS)
    assert [s.request_id for s in reqs.claim_pending("batch-that-died")] == ["r8"]
    meta = data_split(tmp_path / "batch", "digits", BatchContext.open(store, settings), stale_after_hours=0.0)
    assert meta.request_ids == ["r8"]
    history = reqs.get("r8").history
    assert [e["state"] for e in history] == ["pending", "in-progress", "pending", "in-progress"]
    assert "batch-that-died did not finish" in history[2]["detail"]


def test_each_batch_is_one_mlflow_run_tree(scenario):
    from mlflow.tracking import MlflowClient

    settings = scenario["settings"]
    client = registry.connect(settings)
    assert isinstance(client, MlflowClient)
    exp = client.get_experiment_by_name(settings.experiment)
    records = AuditTrail.open(scenario["store"], settings).records()
    for rec in records:
        parent = client.get_run(rec["mlflow_run_id"])
        assert parent.info.run_name == f"rfau-batch {rec['batch_id']}"
        children = client.search_runs(
            [exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        rungs = [f"rung {a['rung']}: {a['method']}" for a in rec["attempts"]]  # the escalation ladder
        assert sorted(r.info.run_name for r in children) == sorted(
            ["audit", "data-split", "evaluate", "register", "unlearn", *rungs]
        )
        unl = next(r for r in children if r.info.run_name == "unlearn")
        steps = client.get_metric_history(unl.info.run_id, "rfau.retain_loss")  # per-epoch losses
        assert len(steps) == FAST["epochs"]


def test_an_append_interrupted_after_taking_its_slot_is_completed_by_the_next(tmp_path):
    from rfau.audit.ledger import Ledger

    settings = TrackingSettings(state_dir=tmp_path / ".rfau")
    trail = AuditTrail.open(str(tmp_path / "store"), settings)
    first = trail.append({"batch_id": "b1", "request_ids": ["r1"]})
    # a writer takes slot 2 and dies before it writes the ledger
    scratch = tmp_path / "scratch.jsonl"
    scratch.write_bytes(trail.ledger_bytes())
    orphan = Ledger(scratch).append({"batch_id": "b2", "request_ids": ["r2"]})
    trail.store.put_bytes("audit/records/000002.json", canonical(orphan), exclusive=True)
    third = trail.append({"batch_id": "b3", "request_ids": ["r3"]})
    assert [r["batch_id"] for r in trail.records()] == ["b1", "b2", "b3"]
    assert third["seq"] == 3 and trail.records()[1]["prev_hash"] == first["hash"]
    assert verify_bytes(trail.ledger_bytes()) == []
    # a slot whose record does not extend the chain is not swallowed
    trail.store.put_bytes("audit/records/000004.json", canonical({**orphan, "seq": 4}), exclusive=True)
    with pytest.raises(Exception, match="does not extend the ledger"):
        trail.append({"batch_id": "b5", "request_ids": ["r5"]})


def test_a_batch_that_fails_after_the_split_puts_its_requests_back_at_once(tmp_path, seed_state):
    from rfau.errors import RfauError

    settings = seed_state(tmp_path / ".rfau")
    store = str(tmp_path / "store")
    reqs = RequestStore.from_uri(store)
    reqs.add([_request(tmp_path / "r.json", "r7", POOL[:6], "gina")], DS)
    with pytest.raises(RfauError, match="rank"):
        run_batch(tmp_path / "w", BatchParams(store=store, method_config={"rank": 0}), settings)
    st = reqs.get("r7")
    assert st.state is RequestState.PENDING and "failed" in st.detail
    assert sorted(registry.Registry(settings).version_tags()) == [1]  # only the bootstrap original
