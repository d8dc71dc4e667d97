"""Real servers on loopback for the tracking and storage tests: moto's S3 server and an MLflow
server, each started once per test session and shared by the xdist workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from tests.support.cli import BIN

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SERVICES = "services"  # <shared dir>/services/<name>.json: a running service's address and pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
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


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def shared_dir(tmp_path_factory) -> Path:
    """A folder shared by the xdist workers of this test session (their base temps' parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_service(tmp_path_factory, name: str, start: Callable[[Path], dict]) -> dict:
    """A server shared by every worker of the test session (one MLflow server, not one a worker:
    each costs about 20 s of CPU to start). The first worker to ask runs ``start(folder)``, which
    starts it in a process group of its own (so that it outlives that worker) and returns its
    address and ``pid``; the controller stops it when the session ends (``stop_services``)."""
    folder = shared_dir(tmp_path_factory) / SERVICES
    folder.mkdir(exist_ok=True)
    info = folder / f"{name}.json"
    with FileLock(str(info) + ".lock"):
        if not info.is_file():
            data = start(folder / name)
            info.write_text(json.dumps(data))
    return json.loads(info.read_text())


def stop_services(basetemp: Path) -> None:
    """Stop the servers ``shared_service`` started under ``basetemp``."""
    for info in (basetemp / SERVICES).glob("*.json"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(json.loads(info.read_text())["pid"], signal.SIGTERM)


def start_service(args: list[str], root: Path, env: dict, ready_url: str) -> int:
    """``args`` as a server in a process group of its own, logging to ``root/server.log``;
    returns its pid once ``ready_url`` answers."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    try:
        wait_http(ready_url, proc, timeout=120)
    except BaseException:  # not recorded, so nobody else would stop it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        raise
    return proc.pid


def s3_client(endpoint: str):
    import boto3

    keys = {k.lower(): v for k, v in S3_ENV.items() if k != "AWS_DEFAULT_REGION"}
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)


def start_moto(root: Path) -> dict:
    """moto's standalone S3-compatible server on a free loopback port, with a bucket."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    pid = start_service(args, root, {**os.environ, **S3_ENV}, endpoint)
    s3_client(endpoint).create_bucket(Bucket="rfau-artifacts")
    return {"endpoint": endpoint, "bucket": "rfau-artifacts", "pid": pid}


def start_mlflow(root: Path, s3: dict) -> dict:
    """A real `mlflow server` (sqlite backend) proxying artifacts to the S3 bucket of ``s3``."""
    port = free_port()
    env = {
        **os.environ,
        **S3_ENV,
        "MLFLOW_S3_ENDPOINT_URL": s3["endpoint"],
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
        f"s3://{s3['bucket']}/mlartifacts",
        "--serve-artifacts",
    ]
    return {"url": url, "root": str(root), "pid": start_service(args, root, env, url + "/health")}
