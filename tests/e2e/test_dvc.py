"""The DVC pipeline as a user runs it: `dvc repro` runs one batch through the CLI with
params.yaml, `dvc metrics show` / `dvc plots show` read the evaluation, the batch (with its forget
set) goes to an S3 remote on a loopback moto server and comes back by md5, and re-running the
unlearn stage from the pulled batch reproduces the registered weights."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import subprocess_env
from tests.support.services import S3_ENV

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


pytestmark = pytest.mark.e2e  # slow: its file is scheduled first


@pytest.fixture(scope="module")
def project(tmp_path_factory, s3_server, seed_state):
    root = tmp_path_factory.mktemp("dvcproj")
    seed_state(root / ".rfau")  # the champion the batch starts from (bootstrapping is tested elsewhere)
    for f in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / f, root / f)
    # short RFAU settings (the DVC plumbing is tested here, RFAU's quality elsewhere)
    params = (root / "params.yaml").read_text()
    assert "  epochs: 30\n" in params
    (root / "params.yaml").write_text(params.replace("  epochs: 30\n", "  epochs: 5\n  retain_budget: 500\n"))
    (root / "rfau").symlink_to(REPO / "rfau")  # every stage depends on the code it runs
    env = subprocess_env(
        **S3_ENV, PATH=f"{BIN}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1", RFAU_STATE_DIR=str(root / ".rfau")
    )

    def run(*cmd, check=True):
        r = subprocess.run(list(cmd), cwd=root, env=env, capture_output=True, text=True, timeout=600)
        if check and r.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            )
        return r

    run("dvc", "init", "--no-scm", "-q")
    ids = [f"digits/{i}" for i in range(1, 400) if i % 5 and i % 11 == 0][:25]
    (root / "req.json").write_text(
        json.dumps(
            {
                "request_id": "dvc-req-1",
                "sample_ids": ids,
                "reason": "erasure",
                "received_at": "2026-11-27T09:00:00Z",
                "subject": "erin",
            }
        )
    )
    run("rfau", "request", "add", "req.json")
    run("dvc", "repro")
    return {"root": root, "run": run, "s3": s3_server}


def test_repro_runs_a_batch_through_the_cli(project):
    root = project["root"]
    reg = json.loads((root / "batch" / "registered" / "registered.json").read_text())
    assert reg["version"] == 2 and reg["gates_passed"] and reg["request_ids"] == ["dvc-req-1"]
    lock = (root / "dvc.lock").read_text()
    for stage in ("split:", "unlearn:", "evaluate:", "register:"):
        assert stage in lock
    listed = project["run"]("rfau", "request", "list", "--json").stdout
    assert '"fulfilled"' in listed


def test_metrics_and_plots_read_the_evaluation(project):
    run = project["run"]
    metrics = json.loads(run("dvc", "metrics", "show", "--json").stdout)
    flat = json.dumps(metrics)
    for key in ('"ua"', '"ra"', '"ta"', '"mia_confidence"', '"gates_passed"'):
        assert key in flat
    run("dvc", "plots", "show")
    html = (project["root"] / "dvc_plots" / "index.html").read_text()
    assert "confidence_hist.png" in html and "test_predictions.json" in html


def test_forget_set_goes_to_the_s3_remote_and_back_by_md5(project):
    root, run, s3 = project["root"], project["run"], project["s3"]
    s3["client"].create_bucket(Bucket="rfau-dvc")
    run("dvc", "remote", "add", "-d", "store", "s3://rfau-dvc/cache")
    run("dvc", "remote", "modify", "store", "endpointurl", s3["endpoint"])
    run("dvc", "push")
    keys = s3["client"].list_objects_v2(Bucket="rfau-dvc").get("KeyCount", 0)
    assert keys > 0
    forget = root / "batch" / "data" / "split" / "forget.txt"
    md5 = hashlib.md5(forget.read_bytes()).hexdigest()
    # the ledger names the forget set by the md5 DVC stores it under
    ledger = [
        json.loads(ln)
        for ln in (root / ".rfau" / "store" / "audit" / "ledger.jsonl").read_text().splitlines()
    ]
    assert ledger[-1]["forget_md5"] == md5
    assert (root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(root / "batch" / "data")
    run("dvc", "pull", "batch/data")
    assert hashlib.md5(forget.read_bytes()).hexdigest() == md5


def test_rerunning_unlearn_from_the_batch_reproduces_the_weights(project):
    root, run = project["root"], project["run"]
    before = json.loads((root / "batch" / "model" / "model.json").read_text())["weights_sha256"]
    run("dvc", "repro", "--single-item", "--force", "unlearn")
    after = json.loads((root / "batch" / "model" / "model.json").read_text())["weights_sha256"]
    assert after == before
    status = run("dvc", "status", "unlearn", "--json").stdout
    assert json.loads(status or "{}") == {}
