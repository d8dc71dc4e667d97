"""`rfau` as the tests call it: in-process (typer's CliRunner) wherever the process itself is not
what is tested, else as a real process of the installed entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


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
