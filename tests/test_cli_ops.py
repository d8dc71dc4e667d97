"""Bad input to the operations commands: a clear error naming the problem, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def run(cli):
    """`rfau ARGS` in-process on a scratch state folder (see conftest.cli)."""
    return cli


def test_request_add_rejects_bad_requests_and_writes_nothing(run, tmp_path):
    good = {
        "request_id": "ok-1",
        "sample_ids": ["digits/1"],
        "reason": "r",
        "received_at": "2026-11-27T00:00:00Z",
    }
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "a.json").write_text(json.dumps(good))
    (tmp_path / "reqs" / "b.json").write_text(
        json.dumps({**good, "request_id": "bad-1", "sample_ids": ["digits/0"]})
    )
    r = run("request", "add", "reqs")
    assert r.returncode == 2 and "bad-1" in r.stderr and "test split" in r.stderr
    assert json.loads(run("request", "list", "--json").stdout) == []  # the good one was not queued either
    r = run("request", "add", "missing.json")
    assert r.returncode == 2 and "missing.json" in r.stderr
    (tmp_path / "reqs" / "b.json").unlink()
    assert run("request", "add", "reqs").returncode == 0
    r = run("request", "add", "reqs")  # the same id again
    assert r.returncode == 2 and "ok-1" in r.stderr
    r = run("request", "list", "--state", "done")
    assert r.returncode == 2 and "pending" in r.stderr


def test_batch_commands_name_the_bad_input(run, tmp_path):
    (tmp_path / "p.yaml").write_text("dataset: digits\nmethod_config: 3\nbogus: 1\n")
    r = run("batch", "split", "--params", "p.yaml", "--out", "b")
    assert r.returncode == 2 and "method_config" in r.stderr and "bogus" in r.stderr
    assert not (tmp_path / "b").exists()
    (tmp_path / "q.yaml").write_text("gates: {max_retain_drop: -1}\n")
    r = run("batch", "split", "--params", "q.yaml", "--out", "b")
    assert r.returncode == 2 and "max_retain_drop" in r.stderr
    r = run("batch", "unlearn", "--batch", "nowhere", "--out", "m")
    assert r.returncode == 2 and "not a batch folder" in r.stderr and not (tmp_path / "m").exists()
    r = run("batch", "split", "--set", "dataset=/no/such/data", "--out", "b")
    assert r.returncode == 2 and "not found" in r.stderr and not (tmp_path / "b").exists()


def test_a_batch_with_nothing_pending_exits_cleanly(run, tmp_path):
    from rfau.data.request_store import RequestStore

    # a store nobody ever initialised is a misconfiguration (a mistyped path), not "nothing to do"
    r = run("batch", "run", "--workdir", "w")
    assert r.returncode == 2 and "never been initialised" in r.stderr
    RequestStore.open(tmp_path / ".rfau" / "store", create=True)
    r = run("batch", "run", "--workdir", "w")
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = run("audit", "verify", "--no-weights")
    assert r.returncode == 0 and "0 record(s)" in r.stdout
