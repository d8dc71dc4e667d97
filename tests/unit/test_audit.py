"""The deletion ledger (hash chain, tamper evidence, anchors), the salt, and the proof of deletion."""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import json
import os
import random
import stat
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfau.audit import (
    GENESIS,
    Ledger,
    canonical,
    load_or_create_salt,
    record_hash,
    render_proof,
    subject_hash,
    verify,
    verify_bytes,
)
from rfau.errors import RfauError

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SALT = bytes(range(32))
RESERVED = {"seq", "prev_hash", "recorded_at", "hash"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def batch_fields(i: int, evidence: dict | None = None) -> dict:
    """A realistic ledger record's caller-supplied fields for batch ``i`` (1-based)."""
    rids = [f"req-2025-{i:03d}-{k}" for k in range(1 + i % 3)]
    classwise = i % 2 == 0
    metrics = {
        "ua": 97.5 - i,
        "ra": 99.1 - i / 10,
        "ta": 96.3 - i / 10,
        "ta_kept_classes": 97.0 - i / 10,
        "mia_confidence": 12.5 + i,
        "mia_confidence_test": 10.25,
    }
    baseline = {
        "ua": 0.8,
        "ra": 99.4,
        "ta": 96.9,
        "ta_kept_classes": 97.2,
        "mia_confidence": 88.0,
        "mia_confidence_test": 10.5,
    }
    gates = [
        {
            "name": "forget_accuracy" if classwise else "forget_error_gap",
            "passed": True,
            "value": 2.5,
            "bound": 5.0,
            "detail": "accuracy on the forgotten classes' training samples",
        },
        {
            "name": "retain_drop",
            "passed": i != 4,
            "value": 0.3 if i != 4 else 2.7,
            "bound": 2.0,
            "detail": "RA drop vs champion",
        },
    ]
    return {
        "batch_id": f"batch-{i:04d}",
        "request_ids": rids,
        "subject_hashes": {r: subject_hash(f"subject-{r}@example.org", SALT) for r in rids},
        "forget_md5": hashlib.md5(f"forget{i}".encode()).hexdigest(),
        "forget_count": 40 * i + 7,
        "forget_classes": [i % 10] if classwise else [],
        "dataset": "digits",
        "model": {
            "name": "rfau-digits",
            "before": {"version": i, "weights_sha256": sha(f"w{i}".encode())},
            "after": {"version": i + 1, "weights_sha256": sha(f"w{i + 1}".encode())},
        },
        "promoted": i != 4,
        "champion_after": i + 1 if i != 4 else i,
        "method": "rfau",
        "config": {"epochs": 5, "lr": 0.001, "lora_rank": 8, "alpha": 1.5, "tap": "layer3"},
        "metrics": metrics,
        "baseline_metrics": baseline,
        "gates": gates,
        "gates_passed": i != 4,
        "evidence": evidence
        if evidence is not None
        else {"confidence_hist.png": sha(f"png{i}".encode()), "metrics.json": sha(f"json{i}".encode())},
        "code_version": f"0.1.0+g{i:07x}",
        "started_at": (T0 + timedelta(hours=i)).isoformat(),
        "finished_at": (T0 + timedelta(hours=i, minutes=3)).isoformat(),
        "mlflow_run_id": f"{i:032x}",
    }


def build_ledger(path: Path, n: int = 6) -> Ledger:
    ledger = Ledger(path)
    for i in range(1, n + 1):
        ledger.append(batch_fields(i), now=T0 + timedelta(hours=i, minutes=5))
    return ledger


def serialize(records: list[dict]) -> bytes:
    return b"".join(canonical(r) + b"\n" for r in records)


# --- append / records / head / find -------------------------------------------------------------


def test_round_trip_seq_chain_head_find(tmp_path):
    path = tmp_path / "audit" / "ledger.jsonl"
    ledger = Ledger(path)
    assert ledger.records() == [] and ledger.head() is None and verify(path) == []
    stored = [ledger.append(batch_fields(i), now=T0 + timedelta(hours=i)) for i in range(1, 4)]
    recs = ledger.records()
    assert recs == stored
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert recs[0]["prev_hash"] == GENESIS
    assert [r["prev_hash"] for r in recs[1:]] == [r["hash"] for r in recs[:-1]]
    assert all(r["hash"] == record_hash(r) for r in recs)
    for i, r in enumerate(recs, start=1):
        assert {k: v for k, v in r.items() if k not in RESERVED} == batch_fields(i)
        assert datetime.fromisoformat(r["recorded_at"]) == T0 + timedelta(hours=i)
    assert ledger.head() == {"seq": 3, "hash": recs[2]["hash"]}
    assert path.read_bytes() == serialize(recs)
    assert verify(path) == [] and verify(path, [ledger.head(), {"seq": 1, "hash": recs[0]["hash"]}]) == []
    assert [r["seq"] for r in ledger.find("req-2025-002-1")] == [2]
    assert ledger.find("req-unknown") == []
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_recorded_at_never_goes_backwards(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl")
    a = ledger.append(batch_fields(1), now=T0)
    b = ledger.append(batch_fields(2), now=T0 - timedelta(days=1))  # clock went backwards
    assert b["recorded_at"] == a["recorded_at"]
    c = ledger.append(batch_fields(3))  # default: now, UTC
    assert datetime.fromisoformat(c["recorded_at"]).tzinfo is not None
    assert verify(ledger.path) == []


def test_append_validates_fields(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl")
    for bad in (
        {**batch_fields(1), "seq": 5},
        {**batch_fields(1), "hash": "x"},
        {"request_ids": ["r"]},
        {"batch_id": "b"},
        {"batch_id": "b", "request_ids": "r"},
        {"batch_id": "b", "request_ids": ["r"], "when": datetime.now(UTC)},
        {"batch_id": "b", "request_ids": ["r"], "ids": {1, 2}},
    ):
        with pytest.raises(RfauError):
            ledger.append(bad)
    with pytest.raises(RfauError, match="time-zone"):
        ledger.append(batch_fields(1), now=datetime(2025, 1, 1))
    assert not ledger.path.exists()


def test_append_to_tampered_ledger_is_refused(tmp_path):
    ledger = build_ledger(tmp_path / "l.jsonl", 3)
    data = ledger.path.read_bytes()
    ledger.path.write_bytes(data.replace(b'"forget_count":87', b'"forget_count":88'))
    assert verify(ledger.path)
    with pytest.raises(RfauError, match="fails verification"):
        ledger.append(batch_fields(4))
    ledger.path.write_bytes(data + b"{not json\n")
    with pytest.raises(RfauError, match="line 4"):
        ledger.records()
    with pytest.raises(RfauError, match="refusing"):
        ledger.append(batch_fields(4))


def test_failed_write_leaves_ledger_unchanged(tmp_path, monkeypatch):
    ledger = build_ledger(tmp_path / "l.jsonl", 2)
    before = ledger.path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        ledger.append(batch_fields(3))
    monkeypatch.undo()
    assert ledger.path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    ledger.append(batch_fields(3))
    assert verify(ledger.path) == []


# --- salt and subject hashes ---------------------------------------------------------------------


def test_salt_created_once_private_and_reused(tmp_path):
    path = tmp_path / "secrets" / "ledger.salt"
    salt = load_or_create_salt(path)
    assert len(salt) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_salt(path) == salt and path.read_bytes() == salt
    other = load_or_create_salt(tmp_path / "other.salt")
    assert other != salt
    assert [p.name for p in path.parent.iterdir()] == ["ledger.salt"]  # no temp file left
    path.write_bytes(b"short")
    with pytest.raises(RfauError, match="5 bytes"):
        load_or_create_salt(path)


def test_subject_hash_is_salted_and_opaque():
    s1, s2 = b"\x01" * 32, b"\x02" * 32
    h = subject_hash("alice@example.org", s1)
    assert h == subject_hash("alice@example.org", s1) and len(h) == 64 and int(h, 16) >= 0
    assert h != subject_hash("alice@example.org", s2)
    assert h != subject_hash("bob@example.org", s1)
    assert "alice" not in h and h != sha(b"alice@example.org")
    with pytest.raises(RfauError):
        subject_hash("alice", b"")


# --- tamper evidence: the acceptance test --------------------------------------------------------


def _leaf_paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaf_paths(v, (*prefix, k))
    elif isinstance(obj, list) and obj:
        for i, v in enumerate(obj):
            yield from _leaf_paths(v, (*prefix, i))
    else:
        yield prefix


def _changed(v, rng: random.Random):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + rng.choice([-2, -1, 1, 2, 10])
    if isinstance(v, float):
        return round(v + rng.choice([-1, 1]) * rng.uniform(0.01, 5), 4)
    if isinstance(v, str):
        if not v:
            return "x"
        i = rng.randrange(len(v))
        c = rng.choice([ch for ch in "0123456789abcdefXYZ-:" if ch != v[i]])
        return v[:i] + c + v[i + 1 :]
    if isinstance(v, list):
        return [*v, "extra"]
    return "forged"  # None, {}


def _edit(record: dict, rng: random.Random, keep_hash_field: bool, fields_only: bool = False) -> dict:
    """A copy with one leaf value changed (or, sometimes, a top-level field dropped)."""
    rec = copy.deepcopy(record)
    paths = [
        p
        for p in _leaf_paths(rec)
        if not (keep_hash_field and p == ("hash",)) and not (fields_only and p[0] in RESERVED)
    ]
    path = rng.choice(paths)
    if rng.random() < 0.1 and path[0] not in RESERVED and len(path) == 1:
        del rec[path[0]]  # drop a field
        return rec
    node = rec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = _changed(node[path[-1]], rng)
    return rec


def _rechain(records: list[dict], start: int = 0) -> list[dict]:
    """What a forger who knows the format does: renumber and re-hash everything from ``start``."""
    out = copy.deepcopy(records)
    for i in range(start, len(out)):
        out[i]["seq"] = i + 1
        out[i]["prev_hash"] = out[i - 1]["hash"] if i else GENESIS
        out[i]["hash"] = record_hash(out[i])
    return out


def mutate(data: bytes, records: list[dict], kind: str, rng: random.Random) -> bytes:
    n = len(records)
    recs = copy.deepcopy(records)
    if kind == "byte_replace":
        pos = rng.randrange(len(data))
        new = rng.choice([b for b in range(256) if b != data[pos]])
        return data[:pos] + bytes([new]) + data[pos + 1 :]
    if kind == "byte_insert":
        pos = rng.randrange(len(data) + 1)
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos:]
    if kind == "byte_delete":
        pos = rng.randrange(len(data))
        return data[:pos] + data[pos + 1 :]
    i = rng.randrange(n)
    if kind == "edit_field":  # re-serialized canonically, hashes not fixed
        recs[i] = _edit(recs[i], rng, keep_hash_field=False)
    elif kind == "edit_rehash":  # that record's hash recomputed
        recs[i] = _edit(recs[i], rng, keep_hash_field=True)
        recs[i]["hash"] = record_hash(recs[i])
    elif kind == "edit_rechain":  # the whole chain from there recomputed: only the anchor can tell
        recs[i] = _edit(recs[i], rng, keep_hash_field=True, fields_only=True)  # _rechain resets the rest
        recs = _rechain(recs, i)
    elif kind == "remove_random":
        del recs[i]
    elif kind == "remove_random_rechain":
        del recs[i]
        recs = _rechain(recs, i)
    elif kind == "remove_last":
        recs = recs[:-1]
    elif kind == "insert_copy":
        recs.insert(rng.randrange(n + 1), copy.deepcopy(recs[i]))
    elif kind == "insert_forged":  # a made-up batch before the anchored head, chain recomputed or not
        forged = {
            **batch_fields(100 + i),
            "seq": 0,
            "prev_hash": GENESIS,
            "recorded_at": recs[i]["recorded_at"],
        }
        forged["hash"] = record_hash(forged)
        recs.insert(i, forged)
        if rng.random() < 0.5:
            recs = _rechain(recs, i)
    elif kind == "swap":
        j = rng.choice([k for k in range(n) if k != i])
        recs[i], recs[j] = recs[j], recs[i]
        if rng.random() < 0.3:
            recs = _rechain(recs, min(i, j))
    elif kind == "duplicate":
        recs.insert(i + 1, copy.deepcopy(recs[i]))
    elif kind == "reorder":
        order = list(range(n))
        while order == list(range(n)):
            rng.shuffle(order)
        recs = [recs[k] for k in order]
    else:
        raise AssertionError(kind)
    return serialize(recs)


BYTE_KINDS = {"byte_replace": 6, "byte_insert": 2, "byte_delete": 2}  # relative weights, 500 in all
RECORD_KINDS = [
    "edit_field",
    "edit_rehash",
    "edit_rechain",
    "remove_random",
    "remove_random_rechain",
    "remove_last",
    "insert_copy",
    "insert_forged",
    "swap",
    "duplicate",
    "reorder",
]


def test_every_mutation_is_detected(tmp_path):
    """1,000 seeded random mutations of a realistic ledger, each on a fresh copy: all detected, with the
    head anchored elsewhere (as the model registry keeps it)."""
    ledger = build_ledger(tmp_path / "ledger.jsonl", 6)
    original = ledger.path.read_bytes()
    records = ledger.records()
    anchors = [ledger.head()]
    assert anchors == [{"seq": 6, "hash": records[-1]["hash"]}]
    assert verify_bytes(original, anchors) == []
    # sanity: a legitimate append after the anchor is fine, so detection is not "everything fails"
    ledger.append(batch_fields(7), now=T0 + timedelta(days=1))
    assert verify_bytes(ledger.path.read_bytes(), anchors) == []
    # a recomputed chain fools the chain alone; the anchor is what catches it
    rechained = serialize(_rechain([_edit(records[0], random.Random(1), True, True), *records[1:]]))
    assert verify_bytes(rechained) == [] and verify_bytes(rechained, anchors)

    rng = random.Random(20250301)
    kinds = [k for k, w in BYTE_KINDS.items() for _ in range(w)]
    plan = [kinds[t % len(kinds)] for t in range(500)] + [
        RECORD_KINDS[t % len(RECORD_KINDS)] for t in range(500)
    ]
    detected, missed = Counter(), []
    for kind in plan:
        mutated = mutate(original, records, kind, rng)
        assert mutated != original, kind
        problems = verify_bytes(mutated, anchors)
        if problems:
            detected[kind] += 1
        else:
            missed.append((kind, mutated))
    print("\nmutations detected per kind:")
    for kind, count in sorted(detected.items()):
        print(f"  {kind:24s} {count}")
    print(f"  {'total':24s} {sum(detected.values())} of {len(plan)}")
    assert not missed, f"{len(missed)} undetected mutations, first: {missed[0][0]}"
    assert sum(detected.values()) == 1000 and len(detected) == len(BYTE_KINDS) + len(RECORD_KINDS)


def test_problems_say_what_is_wrong(tmp_path):
    ledger = build_ledger(tmp_path / "l.jsonl", 4)
    data, recs = ledger.path.read_bytes(), ledger.records()
    anchors = [ledger.head()]

    def problems(b, a=None):
        return "\n".join(verify_bytes(b, a))

    assert "ends at seq 3" in problems(serialize(recs[:-1]), anchors)
    assert "does not end with a newline" in problems(data[:-1])
    assert "canonical" in problems(data.replace(b'"dataset":"digits"', b'"dataset": "digits"'))
    assert "hash does not match" in problems(serialize([recs[0], {**recs[1], "forget_count": 1}, *recs[2:]]))
    assert "seq is 3, expected 2" in problems(serialize([recs[0], *recs[2:]]))
    assert "prev_hash" in problems(serialize([recs[1], recs[0], *recs[2:]]))
    late = dict(recs[1], recorded_at=(T0 - timedelta(days=9)).isoformat())
    assert "earlier than the previous" in problems(serialize(_rechain([recs[0], late, *recs[2:]], 1)))
    assert "history rewritten" in problems(
        serialize(_rechain(recs[:1] + [dict(recs[1], dataset="x")] + recs[2:], 1)), anchors
    )
    assert "line 2: not valid JSON" in problems(data.replace(b"\n", b"\n\n", 1))
    assert verify_bytes(b"") == [] and "ends at seq 0" in problems(b"", anchors)
    assert "malformed" in problems(data, [{"seq": "1"}])
    assert "ends at seq 0" in "\n".join(verify(tmp_path / "missing.jsonl", anchors))


# --- property: arbitrary JSON fields survive, the ledger verifies ---------------------------------

JSON_LEAF = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
JSON = st.recursive(
    JSON_LEAF,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=12,
)
FIELDS = st.fixed_dictionaries(
    {"batch_id": st.text(min_size=1), "request_ids": st.lists(st.text(), max_size=3)},
    optional={"metrics": st.dictionaries(st.text(), st.floats(allow_nan=False, allow_infinity=False))},
).flatmap(
    lambda base: st.dictionaries(
        st.text().filter(lambda k: k not in RESERVED and k not in base), JSON, max_size=5
    ).map(lambda extra: {**extra, **base})
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FIELDS, min_size=1, max_size=4))
def test_property_arbitrary_fields_round_trip(batches):
    with tempfile.TemporaryDirectory() as d:
        ledger = Ledger(Path(d) / "ledger.jsonl")
        for fields in batches:
            ledger.append(fields)
        recs = ledger.records()
        assert verify(ledger.path, [ledger.head()]) == []
        assert [{k: v for k, v in r.items() if k not in RESERVED} for r in recs] == batches
        assert [r["seq"] for r in recs] == list(range(1, len(batches) + 1))


# --- proof of deletion ---------------------------------------------------------------------------


class StrictParser(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags, self.imgs = [], [], Counter(), []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def parse_html(text: str) -> StrictParser:
    p = StrictParser()
    p.feed(text)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    return p


@pytest.fixture
def evidence(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = tmp_path / "evidence"
    folder.mkdir()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.hist([0.1, 0.2, 0.2, 0.9, 0.95], bins=5)
    fig.savefig(folder / "confidence_hist.png")
    plt.close(fig)
    (folder / "metrics.json").write_text(json.dumps({"ua": 95.5}))
    return folder, {p.name: sha(p.read_bytes()) for p in folder.iterdir()}


def test_render_proof(tmp_path, evidence):
    folder, shas = evidence
    fields = batch_fields(4, evidence=shas)  # batch 4: a failed gate, not promoted
    fields["method"] = "rfau<script>alert(1)</script>"
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for i in range(1, 4):
        ledger.append(batch_fields(i))
    record = ledger.append(fields)
    rid = fields["request_ids"][1]

    md, page = render_proof(record, rid, folder)
    for text in (md, page):
        assert rid in text and fields["batch_id"] in text and fields["forget_md5"] in text
        assert (
            fields["model"]["before"]["weights_sha256"] in text and fields["model"]["after"]["weights_sha256"]
        )
        assert record["hash"] in text and record["prev_hash"] in text
        assert fields["subject_hashes"][rid] in text
        assert "rfau audit verify" in text and "PASS" in text and "FAIL" in text
        assert text.count("✓ matches") == 2 and "✗" not in text.split("Evidence")[-1].split("Ledger")[0]
    assert "| retain_drop | 2.70 | 2.00 | — | — | FAIL |" in md
    assert "| UA | 93.50 | 0.80 | +92.70 |" in md
    assert "| Version that had the data | 4 |" in md and "| Version the batch produced | 5 |" in md
    for text in (md, page):  # a failed version: the first sentence says the request is not fulfilled
        assert "no longer knows" not in text
    first = md.split("\n")[2]
    assert first.startswith(f"Request {rid} was NOT fulfilled by batch batch-0004: model version 5 failed")
    assert "(retain_drop)" in first and "the champion (version 4)" in first
    assert "| Promoted to champion | no |" in md
    assert "![confidence_hist.png](confidence_hist.png)" in md

    parsed = parse_html(page)
    assert parsed.tags["table"] >= 5 and parsed.tags["html"] == 1 and parsed.tags["script"] == 0
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert '<img src="data:image/png;base64,' in page
    [img] = parsed.imgs
    assert base64.b64decode(img["src"].split(",", 1)[1]) == (folder / "confidence_hist.png").read_bytes()

    # a changed evidence file no longer matches, and is not embedded as if it were the evidence
    (folder / "metrics.json").write_text(json.dumps({"ua": 12.0}))
    (folder / "confidence_hist.png").write_bytes(b"\x89PNG not the original")
    md2, page2 = render_proof(record, rid, folder)
    assert "| metrics.json |" in md2 and "✗ does not match" in md2 and "✓ matches" not in md2
    assert "✗ does not match" in page2 and "data:image/png" not in page2
    parse_html(page2)
    (folder / "metrics.json").unlink()
    assert "✗ missing" in render_proof(record, rid, folder)[0]

    md3, page3 = render_proof(record, rid, None)  # no evidence folder: listed, not checked
    assert "not checked" in md3 and "data:image/png" not in page3

    with pytest.raises(RfauError, match="not in ledger record"):
        render_proof(record, "req-unknown", folder)


def test_render_proof_tolerates_sparse_records():
    record = {
        "batch_id": "b<1>",
        "request_ids": ["r&1"],
        "seq": 1,
        "prev_hash": GENESIS,
        "recorded_at": T0.isoformat(),
        "evidence": {"../etc/passwd": "00"},
    }
    record["hash"] = record_hash(record)
    md, page = render_proof(record, "r&1", Path("/nonexistent"))
    assert "r&1" in md and "not a plain file name" in md and "gates not recorded" in md
    assert "r&amp;1" in page and "b&lt;1&gt;" in page
    parse_html(page)


def _first_sentence(record: dict, rid: str) -> str:
    """The proof's first sentence, the same in the Markdown and in the HTML page."""
    md, page = render_proof(record, rid, None)
    first = md.split("\n")[2]
    assert f"<p>{html.escape(first)}</p>" in page
    return first


def test_proof_words_approximate_and_exact_deletions_as_what_they_are():
    approximate = {**batch_fields(2), "seq": 2}
    rid = approximate["request_ids"][0]
    first = _first_sentence(approximate, rid)
    assert first == (
        f"Request {rid} was fulfilled by batch batch-0002 (approximate: rfau; indistinguishable from "
        "unseen data within the evidence below): model version 3 is the champion."
    )
    assert "exact" not in first and "no longer knows" not in render_proof(approximate, rid, None)[0]
    for exact in ({**approximate, "exact": True}, {**approximate, "method": "retrain"}):
        first = _first_sentence(exact, rid)
        assert first.startswith(f"Request {rid} was fulfilled by batch batch-0002 (exact): model version 3")
        assert "| Deletion | exact: retrained without the data |" in render_proof(exact, rid, None)[0]
    # passed its gates, but the champion moved meanwhile: not fulfilled either
    held = {**approximate, "promoted": False, "held_back": "the champion moved", "champion_after": 7}
    assert _first_sentence(held, rid).startswith(
        f"Request {rid} was NOT fulfilled by batch batch-0002: model version 3 passed its gates but "
        "was not promoted (the champion moved); the champion (version 7) still holds the data."
    )


def test_proof_renders_attempts_deadlines_and_evidence_power_when_recorded():
    record = {**batch_fields(2), "seq": 2, "method": "retrain", "exact": True}
    rid = record["request_ids"][0]
    record["attempts"] = [
        {
            "rung": 0,
            "method": "rfau",
            "config": {"epochs": 5},
            "seconds": 4.2,
            "gates_passed": False,
            "failed_gates": ["forgotten_class_vs_unseen_auc"],
            "why": "AUC 0.80 > bound 0.63",
        },
        {
            "rung": 1,
            "method": "retrain",
            "config": {},
            "seconds": 91.0,
            "gates_passed": True,
            "failed_gates": [],
            "why": "",
        },
    ]
    record["deadlines"] = {rid: {"due": "2026-12-30T00:00:00Z", "met": False}}
    record["gates"] = [
        *record["gates"],
        {
            "name": "forgotten_class_vs_unseen_auc",
            "passed": True,
            "value": 0.52,
            "bound": 0.67,
            "n": 30,
            "detectable": 0.687,
            "detail": "trained vs unseen",
        },
        {
            "name": "forgotten_class_member_rate",
            "passed": True,
            "measurable": False,
            "n": 4,
            "reason": "forgotten_class_member_rate_at_10fpr: NOT MEASURABLE (4 reference samples)",
            "detail": "member rate",
        },
    ]
    md, page = render_proof(record, rid, None)
    first = md.split("\n")[2]
    assert "(exact)" in first and "It missed its deadline (due 2026-12-30T00:00:00Z)." in first
    assert "Some evidence could not be measured at this size" in first
    assert "## Attempts (escalation ladder)" in md and "<h2>Attempts (escalation ladder)</h2>" in page
    assert "| 0 | rfau | 4.20 | no | forgotten_class_vs_unseen_auc | AUC 0.80 > bound 0.63 |" in md
    assert "| Due | 2026-12-30T00:00:00Z |" in md and "| Deadline met | no |" in md
    assert "## Evidence power" in md
    assert "forgotten_class_vs_unseen_auc: at n = 30 the smallest value the test detects (alpha 0.05, " in md
    assert "0.687" in md and "| NOT MEASURABLE |" in md and "NOT MEASURABLE (4 reference samples)" in md
    parse_html(page)
    # an old record without these keys: no attempts, no deadline, no power section
    old_md = render_proof({**batch_fields(2), "seq": 2}, rid, None)[0]
    assert "Attempts" not in old_md and "Deadline" not in old_md and "Evidence power" not in old_md
