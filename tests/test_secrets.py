"""No secret reaches a log or a file (issue 13, item 8).

A local pipeline run (every batch stage) and a `rfau register`, with a password in RFAU_TRACKING_URI (a real
`mlflow server` on loopback), fake AWS keys and an audit salt in the environment (requests and the
ledger in moto's S3). Every byte of their stdout and stderr, of the state folder, of the MLflow
store and of every S3 object is searched for the secrets; MLflow's "View run ... at:" lines must
show a URI without credentials.
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
from conftest import subprocess_env
from typer.testing import CliRunner

from rfau.cli import app

RFAU = str(Path(sys.executable).parent / "rfau")
PASSWORD = "Pw-0f-the-tracking-server-7731"
AWS_KEY_ID = "AKIAFAKEKEYID0013XYZ"
AWS_SECRET = "fakeAwsSecret/13+never-logged-QvWz"
SALT = "audit-salt-that-stays-secret-5512"
FAST = 'method_config={"epochs": 3, "retain_budget": 300}'

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
def secret_env(tmp_path, mlflow_server, s3_server, seed_state):
    """A champion on the server and the environment of a careless operator: a password in the
    tracking URI, AWS keys and the audit salt in the environment."""
    name = f"secrets-{uuid.uuid4().hex[:8]}"
    server = mlflow_server["url"]
    seed_state(tmp_path / ".rfau", tracking_uri=server, model_name=name)  # the champion to start from
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


def _run_all(root: Path, env: dict, commands: list[list[str]]) -> str:
    """Run each `rfau` command (each must succeed) -> all their stdout and stderr."""
    outputs = []
    for args in commands:
        started = time.monotonic()
        r = subprocess.run([RFAU, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
        print(f"rfau {' '.join(args[:2])}: {time.monotonic() - started:.0f} s")  # reported, not asserted
        outputs.extend([r.stdout, r.stderr])
        assert r.returncode == 0, r.stdout + r.stderr
    return "\n".join(outputs)


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


def test_a_local_pipeline_run_and_a_register_leak_no_secret(
    tmp_path, secret_env, mlflow_server, s3_server, digits_original
):
    """The pipeline run goes through every stage (the same functions `rfau batch run` calls), and
    kfp.local prints each task's inputs, the tracking URI among them."""
    name, env = secret_env
    model = ["--model", str(digits_original / "model"), "--metrics", str(digits_original / "metrics.json")]
    text = _run_all(
        tmp_path,
        env,
        [
            ["request", "add", str(_request(tmp_path, "req-pipeline", TRAIN_IDS[:30]))],
            ["pipeline", "run", "--local", "--no-demo", "--root", "runs", "--set", FAST],
            ["register", *model, "--bootstrap"],  # an original: no deletion gates to check
        ],
    )
    assert "holdout_fraction" in text  # kfp.local printed the task inputs (the tracking URI is no input)
    # and the audit, in-process (its output is checked too)
    verify = CliRunner().invoke(app, ["audit", "verify", "--no-weights"], env=_isolated(env))
    assert verify.exit_code == 0, verify.output
    text += verify.output
    _assert_no_secret(tmp_path, text, name, mlflow_server, s3_server)
