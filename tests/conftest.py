"""Real services on loopback for the tracking tests: moto's S3 server and an MLflow server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("RFAU_QUIET", "1")
# one torch thread per process: two xdist workers (plus the CLI processes they start) share two
# cores, and torch's default of one thread per core makes them wait on each other
os.environ.setdefault("OMP_NUM_THREADS", "1")
BIN = Path(sys.executable).parent
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# Test time per file measured on the 2-core machine (2026-11-29, `pytest --durations=0`), the
# files over 15 s; any other file counts 1 s, or 20 s when it holds an ``e2e`` test.
FILE_SECONDS = {
    "test_secrets.py": 102,
    "test_faults.py": 83,
    "test_pipeline_local.py": 72,
    "test_registry.py": 65,
    "test_rfau.py": 61,
    "test_concurrency.py": 60,
    "test_operator_faults.py": 60,  # measured 2026-12-07 on a loaded 2-core machine: 71 s with fixtures
    "test_operator.py": 30,  # 49 s with the digits original trained in it
    "test_dvc.py": 55,
    "test_run_job.py": 41,
    "test_bench.py": 36,
    "test_request_store.py": 34,
    "test_pipeline_failure.py": 28,
    "test_cli_ops.py": 22,
    "test_batches.py": 18,
    "test_infra.py": 16,
    "test_image.py": 140,  # measured 2026-12-07 on a loaded 2-core machine: pip's dry run of the image's set
    "test_bench_cifar10.py": 16,
}


def pytest_collection_modifyitems(config, items):
    """The longest files first (longest processing time first): xdist (``--dist loadfile``, one
    file a unit, handed out in collection order with ``--no-loadscope-reorder``; its default
    reorder puts files with many tests first and one-test pipeline runs last) then starts the
    long units early and the two workers finish together instead of one waiting on a long file
    at the end. (``--dist loadgroup`` would split files further, but xdist 3.8 cannot group under
    pytest 9: it renames ``item._nodeid``, which pytest 9 no longer reads.)"""
    slow = {item.path for item in items if item.get_closest_marker("e2e")}

    def cost(item) -> float:
        return FILE_SECONDS.get(item.path.name, 20 if item.path in slow else 1)

    items.sort(key=lambda item: -cost(item))  # stable: each file's own order is kept


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _shared_dir(tmp_path_factory) -> Path:
    """A folder shared by the xdist workers of this test session (their base temps' parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


SERVICES = "services"  # <shared dir>/services/<name>.json: a running service's address and pid


def _shared_service(tmp_path_factory, name: str, start) -> dict:
    """A server shared by every worker of the test session (one MLflow server, not one a worker:
    each costs about 20 s of CPU to start). The first worker to ask runs ``start(folder)``, which
    starts it in a process group of its own (so that it outlives that worker) and returns its
    address and ``pid``; the controller stops it when the session ends (pytest_sessionfinish)."""
    folder = _shared_dir(tmp_path_factory) / SERVICES
    folder.mkdir(exist_ok=True)
    info = folder / f"{name}.json"
    with FileLock(str(info) + ".lock"):
        if not info.is_file():
            data = start(folder / name)
            info.write_text(json.dumps(data))
    return json.loads(info.read_text())


def pytest_sessionfinish(session):
    """Stop the shared servers (in the controller, or the only process without xdist)."""
    if hasattr(session.config, "workerinput"):
        return
    folder = session.config._tmp_path_factory.getbasetemp() / SERVICES
    for info in folder.glob("*.json"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(json.loads(info.read_text())["pid"], signal.SIGTERM)


def _start_service(args: list[str], root: Path, env: dict, ready_url: str) -> int:
    """``args`` as a server in a process group of its own, logging to ``root/server.log``;
    returns its pid once ``ready_url`` answers."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    try:
        _wait_http(ready_url, proc, timeout=120)
    except BaseException:  # not recorded, so nobody else would stop it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        raise
    return proc.pid


def _s3_client(endpoint: str):
    import boto3

    keys = {k.lower(): v for k, v in S3_ENV.items() if k != "AWS_DEFAULT_REGION"}
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's standalone S3-compatible server on a free loopback port, with a bucket; one for the
    whole session."""

    def start(root: Path) -> dict:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        pid = _start_service(args, root, {**os.environ, **S3_ENV}, endpoint)
        _s3_client(endpoint).create_bucket(Bucket="rfau-artifacts")
        return {"endpoint": endpoint, "bucket": "rfau-artifacts", "pid": pid}

    server = _shared_service(tmp_path_factory, "moto", start)
    return {**server, "client": _s3_client(server["endpoint"])}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3_server):
    """A real `mlflow server` (sqlite backend) proxying artifacts to the S3 bucket; one for the
    whole session (tests keep to model names of their own)."""

    def start(root: Path) -> dict:
        port = free_port()
        env = {
            **os.environ,
            **S3_ENV,
            "MLFLOW_S3_ENDPOINT_URL": s3_server["endpoint"],
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        url = f"http://127.0.0.1:{port}"
        args = [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            f"s3://{s3_server['bucket']}/mlartifacts",
            "--serve-artifacts",
        ]
        return {"url": url, "root": str(root), "pid": _start_service(args, root, env, url + "/health")}

    return _shared_service(tmp_path_factory, "mlflow", start)


@pytest.fixture(scope="session")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Debian's chromium is not installed (`apt-get install chromium`; .ci/run installs it)")
    return path


def subprocess_env(**extra) -> dict:
    """The environment for a CLI subprocess: this process's, minus anything that points rfau or
    MLflow at a store (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI to children)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RFAU_", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))
    }
    return {**env, "RFAU_QUIET": "1", **extra}


def run_rfau(
    *args: str, cwd: Path | None = None, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess:
    """`rfau ARGS` as a real process (the installed entry point) in ``cwd``, with
    ``subprocess_env(**env)``: for what must be a process of its own (kfp.local, a kill, a lock)."""
    return subprocess.run(
        [str(BIN / "rfau"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**env),
    )


@pytest.fixture(scope="session")
def digits_original(tmp_path_factory) -> Path:
    """The digits original exactly as a first batch bootstraps it (the default recipe, seed 0),
    with its evaluation on the empty split: trained once per test session, shared by the workers.
    Copy ``model/`` before changing anything in it."""
    path = _shared_dir(tmp_path_factory) / "digits-original"
    with FileLock(str(path) + ".lock"):
        if not (path / "metrics.json").is_file():
            from rfau.data import load_dataset
            from rfau.data.split import make_split, write_split
            from rfau.stages import evaluate_stage, train_stage

            ds = load_dataset("digits")
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            train_stage(ds, tmp / "model")
            write_split(make_split(ds, []), tmp / "split")
            evaluate_stage(tmp / "model", ds, tmp / "split", tmp / "metrics.json")
            tmp.rename(path)
    return path


@pytest.fixture(scope="session")
def seed_state(digits_original, tmp_path_factory):
    """``seed_state(state_dir)``: a local registry whose champion is the digits original, as if
    a first batch had bootstrapped it (a batch then starts from it instead of training one).

    The registry is built once per worker and copied (a fresh MLflow database and the model's
    torch.export cost about 8 s a test); the copy's absolute paths are moved to its new folder. A
    state on another tracking URI or model name is registered for real."""
    from rfau.tracking import registry
    from rfau.tracking.settings import TrackingSettings

    template: list[Path] = []

    def _register(state_dir: Path, **settings) -> TrackingSettings:
        s = TrackingSettings(state_dir=Path(state_dir), **settings)
        registry.register(digits_original / "model", digits_original / "metrics.json", s, bootstrap=True)
        return s

    def _seed(state_dir: Path, **settings) -> TrackingSettings:
        state_dir = Path(state_dir)
        if settings or state_dir.exists() or os.environ.get("RFAU_MODEL_NAME"):
            return _register(state_dir, **settings)
        if not template:
            template.append(tmp_path_factory.mktemp("seeded") / ".rfau")
            _register(template[0])
        shutil.copytree(template[0], state_dir)
        _move_paths(state_dir, str(template[0]), str(state_dir))
        return TrackingSettings(state_dir=state_dir)

    return _seed


def _move_paths(state_dir: Path, old: str, new: str) -> None:
    """Point a copied local MLflow store at its new folder: the absolute paths MLflow keeps in its
    database (experiment, run, logged-model and version locations) and in each MLmodel file."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(state_dir / "mlflow.db")) as db, db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for _, col, kind, *_ in db.execute(f'pragma table_info("{table}")').fetchall():
                if "CHAR" in kind.upper() or "TEXT" in kind.upper():
                    db.execute(f'update "{table}" set "{col}" = replace("{col}", ?, ?)', (old, new))
    for mlmodel in state_dir.rglob("MLmodel"):
        mlmodel.write_text(mlmodel.read_text().replace(old, new))


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, **env: str) -> CliResult:
    """`rfau ARGS` in this process (typer's CliRunner): the exit code and both streams as a
    subprocess would give them, without 5-10 s of imports per call. The environment is that of
    `subprocess_env` (no inherited store) plus ``env``; an unexpected exception fails the test."""
    from typer.testing import CliRunner

    from rfau.cli import app

    inherited = {
        k: None for k in os.environ if k.startswith(("RFAU_", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))
    }
    full = {**inherited, "RFAU_QUIET": "1", "COLUMNS": "250", **env}
    r = CliRunner().invoke(app, list(args), env=full, catch_exceptions=False)
    return CliResult(r.exit_code, r.stdout, r.stderr)


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``cli(*args)``: `rfau ARGS` in-process, in ``tmp_path``, on the state folder ``tmp_path/.rfau``."""
    monkeypatch.chdir(tmp_path)
    return lambda *args, **env: run_cli(*args, **{"RFAU_STATE_DIR": str(tmp_path / ".rfau"), **env})
