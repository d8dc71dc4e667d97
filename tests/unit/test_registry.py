"""Tracking and registry against a real MLflow server on loopback with S3 artifacts (moto)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rfau.data import load_dataset
from rfau.data.demo import demo_request
from rfau.errors import RfauError
from rfau.gates import Gates, check_gates
from rfau.models import load_checkpoint
from rfau.models.checkpoint import SERVING_EXAMPLE
from rfau.records import Evaluation, GateReport, Registration
from rfau.stages import evaluate_stage, split_stage, unlearn_stage
from rfau.tracking.aliases import list_versions, rollback
from rfau.tracking.registry import Registry
from rfau.tracking.settings import TrackingSettings
from rfau.tracking.versions import register
from tests.support.cli import subprocess_env
from tests.support.services import S3_ENV


@pytest.fixture(scope="module")
def models(tmp_path_factory, digits_original):
    """A quick original, a class-wise RFAU model and their evaluations on digits."""
    root = tmp_path_factory.mktemp("reg")
    ds = load_dataset("digits")
    shutil.copytree(digits_original / "model", root / "original")
    split_stage(ds, [demo_request(ds, "class", root / "req")], root / "split")
    unlearn_stage(root / "original", ds, root / "split", root / "rfau", config={"epochs": 15})
    # a deletion that did not happen: no forget loss, so the class is still recognised
    unlearn_stage(
        root / "original", ds, root / "split", root / "noforget", config={"epochs": 1, "forget_weight": 0.0}
    )
    for m in ("original", "rfau", "noforget"):
        evaluate_stage(root / m, ds, root / "split", root / f"{m}.json")
    return root


def registered(models: Path, name: str, st: TrackingSettings, bootstrap: bool = False) -> Registration:
    """``name``'s model registered with the verdict of the default gates on its evaluation (the
    original as the champion it came from), as `rfau register` does; an original: no gates."""
    evaluation = Evaluation.read(models / f"{name}.json")
    if bootstrap:
        return register(Registry(st), models / name, evaluation, GateReport.original())
    report = check_gates(evaluation, Evaluation.read(models / "original.json"), Gates())
    return register(Registry(st), models / name, evaluation, report)


def settings_for(server, name: str) -> TrackingSettings:
    return TrackingSettings(tracking_uri=server["url"], model_name=name)


def test_gates_fail_then_pass_idempotent_rollback_and_serving(mlflow_server, s3_server, models, tmp_path):
    st = settings_for(mlflow_server, "digits-gates")
    boot = registered(models, "original", st, bootstrap=True)
    assert boot.new and boot.champion == boot.version == 1

    failing = registered(models, "noforget", st)
    assert failing.new and not failing.gates_passed and failing.champion == 1
    rows = {r.version: r for r in list_versions(st)}
    assert "candidate" in rows[failing.version].aliases
    assert "champion" not in rows[failing.version].aliases
    assert "forget_accuracy" in rows[failing.version].gate_failures

    passing = registered(models, "rfau", st)
    assert passing.gates_passed and passing.champion == passing.version
    rows = {r.version: r for r in list_versions(st)}
    assert "previous" in rows[1].aliases and "champion" in rows[passing.version].aliases

    again = registered(models, "rfau", st)
    assert again.version == passing.version and not again.new
    assert len(list_versions(st)) == len(rows)

    # serving: models:/NAME@champion loads in a Python where `import rfau` fails (MLflow's pytorch
    # flavor, pt2: no pickle, no rfau code) and predicts what the registered weights file predicts
    ds = load_dataset("digits")
    x = (ds.x[:64].float() / 255).numpy().astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    serve = (
        "import sys; sys.modules['rfau'] = None\n"
        "import mlflow, numpy as np\n"
        f"mlflow.set_tracking_uri({mlflow_server['url']!r})\n"
        f"m = mlflow.pyfunc.load_model('models:/{st.model_name}@champion')\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(m.predict(np.load({str(tmp_path / 'x.npy')!r}))))\n"
        # the contract: the classes and the value range travel with the model, and the graph
        # refuses pixels sent as 0-255 instead of answering them
        "print(m.metadata.metadata['rfau']['classes'], m.metadata.metadata['rfau']['input']['range'])\n"
        "try:\n"
        f"    m.predict(np.load({str(tmp_path / 'x.npy')!r}) * 255)\n"
        "    print('answered 0-255 pixels')\n"
        "except Exception as e:\n"
        "    print('refused:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", serve], capture_output=True, text=True, env=subprocess_env(**S3_ENV)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{list(ds.classes)} [0.0, 1.0]" in done.stdout
    assert "refused:" in done.stdout and "outside the served model's range [0.0, 1.0]" in done.stdout
    # its input example is real data: the dataset's first test images, as the model takes them
    first = ds.indices(ds.split_ids("test")[:2])
    example = np.load(models / "rfau" / SERVING_EXAMPLE, allow_pickle=False)
    np.testing.assert_array_equal(example, (ds.x[first].float() / 255).numpy())
    model, _ = load_checkpoint(models / "rfau")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).softmax(1).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)

    back = rollback(st)
    assert back.champion == 1 and back.rolled_back == passing.version

    # the artifacts went through the server into the S3 bucket
    pages = (
        s3_server["client"]
        .get_paginator("list_objects_v2")
        .paginate(Bucket=s3_server["bucket"], Prefix="mlartifacts/")
    )  # the bucket is shared by the session's tests: more than one page of keys
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert any(k.endswith("model.safetensors") for k in keys)
    assert any("adapter" in k for k in keys)


def test_unreachable_server_is_a_clear_error_and_registers_nothing(models):
    from tests.support.services import free_port

    st = TrackingSettings(tracking_uri=f"http://127.0.0.1:{free_port()}", model_name="nowhere")
    with pytest.raises(RfauError, match="unreachable"):
        registered(models, "rfau", st)


def _wait_port(port: int, timeout: float = 60) -> None:
    import socket
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"port {port} did not open")


@pytest.mark.parametrize("fault", ["missing bucket", "wrong credentials"])
def test_bad_artifact_store_fails_without_a_half_registered_version(tmp_path, s3_server, models, fault):
    """A tracking server whose S3 store refuses the artifacts: registration fails with the
    reason and no version stays behind."""
    import os
    import sys

    import boto3

    from tests.support.services import S3_ENV, free_port, start_mlflow, stop

    procs, mlflow_pid = [], None
    try:
        endpoint, bucket = s3_server["endpoint"], "no-such-bucket"
        if fault == "wrong credentials":
            # a moto server that checks keys: the bucket is made by its one unauthenticated action,
            # after which the server's keys (never created in its IAM) are refused
            mport = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(mport)],
                    stdout=open(tmp_path / "moto.log", "w"),
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **S3_ENV, "INITIAL_NO_AUTH_ACTION_COUNT": "1"},
                )
            )
            endpoint, bucket = f"http://127.0.0.1:{mport}", "locked"
            _wait_port(mport)  # a TCP check: an HTTP probe would use up the unauthenticated action
            boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name="us-east-1",
            ).create_bucket(Bucket=bucket)
        # the session's MLflow server command, proxying to the refusing store
        server = start_mlflow(tmp_path / "mlflow", {"endpoint": endpoint, "bucket": bucket})
        url, mlflow_pid = server["url"], server["pid"]
        st = TrackingSettings(tracking_uri=url, model_name="bad-store")
        with pytest.raises(RfauError, match="registration failed"):
            registered(models, "rfau", st)
        assert list_versions(st) == []
    finally:
        if mlflow_pid is not None:  # start_mlflow runs it in a process group of its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(mlflow_pid, signal.SIGTERM)
        for p in reversed(procs):
            stop(p)


def test_local_store_is_the_default_and_credentials_stay_out(tmp_path, models, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RFAU_TRACKING_URI", raising=False)
    st = TrackingSettings.from_env(state_dir=str(tmp_path / "state"), model_name="local")
    assert st.uri().startswith("sqlite:///")
    res = registered(models, "original", st, bootstrap=True)
    assert res.champion == 1 and (tmp_path / "state" / "mlflow.db").exists()
    # what a serving machine installs: the CPU torch from PyTorch's CPU index, not PyPI's CUDA build
    (reqs,) = (tmp_path / "state" / "mlartifacts").rglob("requirements.txt")
    lines = reqs.read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines and "torch==2.13.0+cpu" in lines
    # credentials never stay inside the URI: it is cleaned, whatever is shown
    shown = TrackingSettings(tracking_uri="http://user:secret@host:5000").redacted_uri()
    assert "secret" not in shown and shown.endswith("host:5000")


def test_browser_shows_the_model_and_its_champion_alias(mlflow_server, models, chromium, tmp_path):
    st = settings_for(mlflow_server, "digits-ui")
    registered(models, "original", st, bootstrap=True)
    url = f"{mlflow_server['url']}/#/models/digits-ui"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert "digits-ui" in dom
    assert "champion" in dom
    shot = tmp_path / "mlflow-ui.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1400,900", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("RFAU_TEST_ARTIFACTS")  # a folder to keep the screenshot in (CI), if set
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "mlflow-ui.png").write_bytes(shot.read_bytes())
