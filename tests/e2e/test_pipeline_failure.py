"""A local pipeline run that fails inside a stage: it says so, and the pipeline's exit task puts the
requests back to pending (its own file: one scheduling unit of the suite)."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

import pytest

from tests.support.cli import run_cli

BIN = Path(sys.executable).parent
STAGES = ["data-split", "unlearn", "evaluate", "register"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.e2e
def test_a_failing_local_run_says_so_and_releases_its_requests(tmp_path, seed_state):
    seed_state(tmp_path / ".rfau")  # a registry with a champion: the run fails in unlearn, not before
    # valid settings that fail inside the unlearn task: a step size that makes the loss diverge
    # in-process (the tasks are kfp.local's processes; no 8 s of imports for the command itself)
    with contextlib.chdir(tmp_path):
        state = {"RFAU_STATE_DIR": str(tmp_path / ".rfau"), "RFAU_QUIET": "0"}
        r = run_cli(
            "-q",
            "pipeline",
            "run",
            "--local",
            "--demo",
            "--set",
            'method_config={"lr": 1e30, "epochs": 2}',
            **state,
        )
        listed = json.loads(run_cli("request", "list", "--json", **state).stdout)
    assert (
        r.returncode == 3 and "failed before the register stage" in r.stderr and "pending again" in r.stderr
    ), r.stdout[-3000:] + r.stderr[-3000:]
    # -q: no stage lines, but the failed task's line and the end of its log (its error), then the error
    lines = r.stderr.splitlines()
    assert lines[0].startswith("unlearn: failed after ") and "unlearn/task.log" in lines[0], r.stderr
    assert all(ln.startswith("  | ") for ln in lines[1:-1]) and lines[-1].startswith("error: "), r.stderr
    assert 3 <= len(lines) <= 27 and r.stdout == "", r.stderr
    assert [x["state"] for x in listed] == ["pending"] and "failed" in listed[0]["detail"]
    # released by the pipeline's exit task, as on a cluster (run_local's own abort found nothing left)
    assert "pipeline run failed" in listed[0]["detail"]
    (receipt,) = (tmp_path / "runs" / "pipeline").glob("*/cleanup/receipt")
    assert receipt.read_text().startswith(f"Run failed: requests {listed[0]['request_id']} are pending again")
