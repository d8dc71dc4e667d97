"""The suite's fixtures and its scheduling. The helpers they hand out live in tests/support/
(imported as ``tests.support.<module>``, never from this file)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.builders import build_digits_original, copy_registry, register_original
from tests.support.cli import run_cli
from tests.support.services import (
    s3_client,
    shared_dir,
    shared_service,
    start_mlflow,
    start_moto,
    stop_services,
)

os.environ.setdefault("RFAU_QUIET", "1")
# one torch thread per process: two xdist workers (plus the CLI processes they start) share two
# cores, and torch's default of one thread per core makes them wait on each other
os.environ.setdefault("OMP_NUM_THREADS", "1")


# Test time per file on the 2-core machine (seconds of setup and calls, from `pytest --junitxml` of a
# whole run alone on the AVX-512 machine, 2026-12-07); any other file counts 1 s, or 20 s when it holds
# an ``e2e`` test.
FILE_SECONDS = {
    "test_faults.py": 67,
    "test_secrets.py": 46,
    "test_ladder.py": 39,
    "test_pipeline_local.py": 36,
    "test_registry.py": 35,
    "test_dvc.py": 31,
    "test_bench.py": 28,
    "test_concurrency.py": 28,
    "test_rfau.py": 22,
    "test_frontier.py": 18,
    "test_run_job.py": 18,
    "test_request_store.py": 16,
    "test_pipeline_failure.py": 11,
    "test_cli_ops.py": 9,
    "test_kfp_cluster.py": 9,
    "test_operator_faults.py": 9,
    "test_batches.py": 9,
    "test_pipeline.py": 8,
    "test_imports.py": 8,
    "test_bench_cifar10.py": 7,
    "test_infra.py": 6,
    "test_cli_lazy.py": 5,
    "test_image.py": 3,
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


def pytest_sessionfinish(session):
    """Stop the shared servers (in the controller, or the only process without xdist)."""
    if hasattr(session.config, "workerinput"):
        return
    stop_services(session.config._tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's standalone S3-compatible server on a free loopback port, with a bucket; one for the
    whole session."""
    server = shared_service(tmp_path_factory, "moto", start_moto)
    return {**server, "client": s3_client(server["endpoint"])}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3_server):
    """A real `mlflow server` (sqlite backend) proxying artifacts to the S3 bucket; one for the
    whole session (tests keep to model names of their own)."""
    return shared_service(tmp_path_factory, "mlflow", lambda root: start_mlflow(root, s3_server))


@pytest.fixture(scope="session")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Debian's chromium is not installed (`apt-get install chromium`; .ci/run installs it)")
    return path


@pytest.fixture(scope="session")
def digits_original(tmp_path_factory) -> Path:
    """The digits original exactly as a first batch bootstraps it (the default recipe, seed 0),
    with its evaluation on the empty split: trained once per test session, shared by the workers.
    Copy ``model/`` before changing anything in it."""
    return build_digits_original(shared_dir(tmp_path_factory) / "digits-original")


@pytest.fixture(scope="session")
def seed_state(digits_original, tmp_path_factory):
    """``seed_state(state_dir)``: a local registry whose champion is the digits original, as if
    a first batch had bootstrapped it (a batch then starts from it instead of training one).

    The registry is built once per test session (the first worker to need it builds it, under a
    lock) and copied (a fresh MLflow database and the model's torch.export cost about 8 s a test);
    the copy's absolute paths are moved to its new folder. A state on another tracking URI or
    model name is registered for real."""
    from filelock import FileLock

    from rfau.tracking.settings import TrackingSettings

    template = shared_dir(tmp_path_factory) / "seeded" / ".rfau"

    def _seed(state_dir: Path, **settings) -> TrackingSettings:
        state_dir = Path(state_dir)
        if settings or state_dir.exists() or os.environ.get("RFAU_MODEL_NAME"):
            return register_original(digits_original, state_dir, **settings)
        template.parent.mkdir(exist_ok=True)
        with FileLock(str(template.parent) + ".lock"):
            if not (template.parent / "done").is_file():
                shutil.rmtree(template, ignore_errors=True)
                register_original(digits_original, template)
                (template.parent / "done").touch()
        copy_registry(template, state_dir)
        return TrackingSettings(state_dir=state_dir)

    return _seed


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``cli(*args)``: `rfau ARGS` in-process, in ``tmp_path``, on the state folder ``tmp_path/.rfau``."""
    monkeypatch.chdir(tmp_path)
    return lambda *args, **env: run_cli(*args, **{"RFAU_STATE_DIR": str(tmp_path / ".rfau"), **env})
