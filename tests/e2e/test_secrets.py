"""The user's own model through the local pipeline, on a guarded server: lineage kept, no secret
leaked (issue 12's bring-your-own-model and issue 13, item 8, in one kfp.local run).

A tiny, randomly initialised transformers ViT saved with save_pretrained is the pipeline's
`base_model_uri`: the first batch imports it as the bootstrap champion instead of training one and
forgets a request from it; the registry, the ledger and the proof name the imported model. The run
and a `rfau register` go through a real `mlflow server` on loopback with a password in
RFAU_TRACKING_URI, fake AWS keys and an audit salt in the environment (requests and the ledger in
moto's S3). Every byte of their stdout and stderr, of the working folder (the proof included), of
the MLflow store and of every S3 object is searched for the secrets; MLflow's "View run ... at:"
lines must show a URI without credentials.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rfau.audit.trail import AuditTrail
from rfau.batch import BatchContext, champion_lineage
from rfau.cli import app
from rfau.io import sha256_file
from rfau.tracking import registry
from rfau.tracking.settings import TrackingSettings
from tests.support.builders import FAST_RFAU, save_vit
from tests.support.cli import subprocess_env

RFAU = str(Path(sys.executable).parent / "rfau")
PASSWORD = "Pw-0f-the-tracking-server-7731"
AWS_KEY_ID = "AKIAFAKEKEYID0013XYZ"
AWS_SECRET = "fakeAwsSecret/13+never-logged-QvWz"
SALT = "audit-salt-that-stays-secret-5512"

pytestmark = pytest.mark.e2e


def _secrets() -> list[bytes]:
    """The secrets as they could appear: plain, as the URI's user:password pair, as a basic-auth
    header value."""
    pair = f"alice:{PASSWORD}"
    return [
        s.encode()
        for s in (PASSWORD, AWS_KEY_ID, AWS_SECRET, SALT, pair, base64.b64encode(pair.encode()).decode())
    ]


def _request(root: Path, rid: str, sample_ids: list[str]) -> Path:
    path = root / f"{rid}.json"
    path.write_text(
        json.dumps(
            {
                "request_id": rid,
                "sample_ids": sample_ids,
                "reason": "erasure",
                "subject": f"subject of {rid}",
                "received_at": "2026-11-28T00:00:00Z",
            }
        )
    )
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _s3_objects(s3_server) -> dict[str, bytes]:
    s3, bucket = s3_server["client"], s3_server["bucket"]
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    return {f"s3://{bucket}/{k}": s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.fixture
def secret_env(tmp_path, mlflow_server, s3_server):
    """The environment of a careless operator: a password in the tracking URI, AWS keys and the
    audit salt in the environment; a model name of its own on the server, no version yet."""
    name = f"secrets-{uuid.uuid4().hex[:8]}"
    server = mlflow_server["url"]
    return name, subprocess_env(
        RFAU_STATE_DIR=str(tmp_path / ".rfau"),
        RFAU_TRACKING_URI=server.replace("http://", f"http://alice:{PASSWORD}@"),
        RFAU_MODEL_NAME=name,
        RFAU_REQUEST_STORE=f"s3://{s3_server['bucket']}/{name}",
        RFAU_AUDIT_SALT=SALT,
        AWS_ACCESS_KEY_ID=AWS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=s3_server["endpoint"],
        MLFLOW_S3_ENDPOINT_URL=s3_server["endpoint"],
    )


def _run(root: Path, env: dict, *args: str, ok=(0,)) -> subprocess.CompletedProcess:
    """One `rfau` command as a real process; its exit code must be one of ``ok``."""
    started = time.monotonic()
    r = subprocess.run([RFAU, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    print(f"rfau {' '.join(args[:2])}: {time.monotonic() - started:.0f} s")  # reported, not asserted
    assert r.returncode in ok, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _assert_no_secret(root: Path, text: str, name: str, mlflow_server, s3_server) -> None:
    server = mlflow_server["url"]
    assert "View run" in text  # MLflow's run links are there (shown) ...
    for line in text.splitlines():
        if "View run" in line or server.removeprefix("http://") in line:
            assert "@" not in line.split("://", 1)[-1].split("/", 1)[0], line  # ... without credentials
    places = {
        "stdout/stderr": text.encode(),
        **_files(root),
        **_files(Path(mlflow_server["root"])),
        **_s3_objects(s3_server),
    }
    assert any(k.startswith("s3://") and name in k for k in places)  # requests and ledger are there
    leaks = [(where, s.decode()) for where, data in places.items() for s in _secrets() if s in data]
    assert not leaks


def _isolated(env: dict) -> dict:
    """``env`` for an in-process CliRunner call, with what rfau exports (the credentials moved out
    of the URI, MLflow's tracking URI) restored afterwards."""
    moved = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    return {k: None for k in moved} | {
        k: v for k, v in env.items() if k.startswith(("RFAU_", "AWS_", "MLFLOW_S3"))
    }


TRAIN_IDS = [f"digits/{i}" for i in range(1, 120) if i % 5]  # every 5th sample is a test sample


def test_a_users_model_through_the_local_pipeline_keeps_its_lineage_and_leaks_no_secret(
    tmp_path, secret_env, mlflow_server, s3_server, digits_original, monkeypatch
):
    """The pipeline run goes through every stage (the same functions `rfau batch run` calls), and
    kfp.local prints each task's inputs, the tracking URI among them."""
    name, env = secret_env
    vit = save_vit(tmp_path / "my-vit", [str(i) for i in range(10)])
    outputs = [
        _run(tmp_path, env, "request", "add", str(_request(tmp_path, "r1", TRAIN_IDS[:20]))),
        _run(
            tmp_path, env,
            "pipeline", "run", "--local", "--no-demo", "--json", "--root", "runs",
            "--set", f"base_model_uri={vit.name}",  # relative: made absolute for the task processes
            "--set", f"method_config={json.dumps(FAST_RFAU)}",
            ok=(0, 1),  # 1: a gate failed (a random ViT); the run and its records are what is tested
        ),
    ]  # fmt: skip
    result = json.loads(outputs[-1].stdout)["result"]
    # what the terminal showed and what the run's logs keep (kfp.local's output goes to each task's
    # task.log and the run's kfp.log): a secret must be in neither
    logs = sorted((tmp_path / "runs").rglob("*.log"))
    text = "\n".join([*(o.stdout + o.stderr for o in outputs), *(p.read_text() for p in logs)])
    assert "holdout_fraction" in text  # kfp.local logged the task inputs (the tracking URI is no input)

    # the registry: version 1 is the imported model (no original was trained), version 2 its child
    for k, v in env.items():  # the in-process reads below use the same S3 endpoint and keys
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    settings = TrackingSettings(tracking_uri=mlflow_server["url"], model_name=name)
    tags = registry.Registry(settings).version_tags()
    source_sha = sha256_file(vit / "model.safetensors")
    assert sorted(tags) == [1, 2] and result["version"] == 2
    assert tags[1]["rfau.method"] == "imported" and tags[1]["rfau.source_sha256"] == source_sha
    assert tags[2]["rfau.parent_weights_sha256"] == tags[1]["rfau.weights_sha256"]
    assert tags[2]["rfau.request_ids"] == "r1" and tags[2]["rfau.method"] == "rfau"
    champ, lineage = champion_lineage(BatchContext.open(settings=settings))  # type: ignore[misc]
    assert champ.version == (2 if result["promoted"] else 1) and lineage[-1] == source_sha

    # the ledger: one record, from the imported version to the new one
    records = AuditTrail.open(env["RFAU_REQUEST_STORE"], settings).records()
    assert [rec["request_ids"] for rec in records] == [["r1"]]
    assert records[0]["model"]["before"] == {"version": 1, "weights_sha256": tags[1]["rfau.weights_sha256"]}
    assert records[0]["model"]["after"]["version"] == 2 and records[0]["promoted"] == result["promoted"]

    # the proof of deletion and the audit, as a user reads them (in-process; their output is checked)
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(app, ["audit", "show", "r1", "--out", "proof"], env=_isolated(env))
    assert shown.exit_code == 0, shown.output
    proof = (tmp_path / "proof" / "proof.md").read_text()
    assert "r1" in proof and tags[2]["rfau.weights_sha256"] in proof
    verify = CliRunner().invoke(app, ["audit", "verify", "--no-weights"], env=_isolated(env))
    assert verify.exit_code == 0, verify.output

    # and a `rfau register` of an original (no deletion gates to check)
    model = ["--model", str(digits_original / "model"), "--metrics", str(digits_original / "metrics.json")]
    registered = _run(tmp_path, env, "register", *model, "--bootstrap")
    text += "\n".join([registered.stdout, registered.stderr, shown.output, verify.output])
    _assert_no_secret(tmp_path, text, name, mlflow_server, s3_server)
