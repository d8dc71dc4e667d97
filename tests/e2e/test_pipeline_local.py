"""The deletion pipeline run locally with kfp.local, as a new user starts it (`make run`): its own
file, so that the test suite's scheduler (pytest-xdist, one file a unit) can run it beside the others."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import run_cli, run_rfau

BIN = Path(sys.executable).parent
STAGES = ["data-split", "unlearn", "evaluate", "register"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.e2e
def test_local_run_as_a_new_user(tmp_path):
    """`rfau -q pipeline run --local --demo` in an empty folder: the four tasks run with kfp.local,
    each stage's outputs (and its task.log) land in the pipeline root, a new registry version
    appears, and the terminal gets nothing (kfp.local's executor dumps go to the task logs)."""
    t0 = time.time()
    r = run_rfau("-q", "pipeline", "run", "--local", "--demo", cwd=tmp_path, RFAU_QUIET="0")
    seconds = time.time() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = (r.stdout + r.stderr).splitlines()
    print(f"rfau -q pipeline run --local --demo: {len(lines)} lines of output")
    assert len(lines) <= 2, lines  # was about 500 lines of kfp.local's executor output
    (run_dir,) = [p for p in (tmp_path / "runs" / "pipeline").iterdir() if p.is_dir()]  # beside .rfau-output
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == sorted([*STAGES, "cleanup"])
    assert (run_dir / "cleanup" / "receipt").read_text() == "Run succeeded: no request to release.\n"
    # kfp.local's own log lines, in each task's log, are plain when the output is no terminal (MLflow's
    # colored warnings come from rfau's model code and are dealt with there)
    logs = {p.parent.name: p.read_text() for p in run_dir.glob("*/task.log")}
    assert sorted(logs) == sorted([*STAGES, "cleanup"])
    assert "Task 'register' finished with status SUCCESS" in logs["register"]
    kfp_lines = [
        ln
        for text in logs.values()
        for ln in text.splitlines()
        if re.search(r" - (INFO|WARNING|ERROR) - ", ln)
    ]
    assert kfp_lines and not [ln for ln in kfp_lines if ANSI.search(ln)], (
        "escape codes in kfp.local's log lines"
    )
    assert "finished with status SUCCESS" in (run_dir / "kfp.log").read_text()
    assert (run_dir / "data-split" / "batch" / "split" / "forget.txt").stat().st_size > 0
    assert (run_dir / "unlearn" / "model" / "adapter" / "adapter_config.json").is_file()
    assert (run_dir / "evaluate" / "evaluation" / "metrics.json").is_file()
    registered = json.loads((run_dir / "register" / "registered" / "registered.json").read_text())
    # the KFP run and the MLflow run name each other: the run id is the register task's output,
    # the KFP run id a tag on the batch's MLflow run and on the version
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / '.rfau' / 'mlflow.db'}"
    # the registry named too: an earlier test in this worker may have set MLflow's global registry URI
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    run = client.get_run(registered["mlflow_run_id"])
    kfp_run_id = run.data.tags["rfau.kfp_run_id"]
    assert kfp_run_id and run.info.run_name.startswith("rfau-batch ")
    version = client.get_model_version(registered["model"], str(registered["version"]))
    assert version.tags.get("rfau.kfp_run_id") == kfp_run_id, version.tags
    assert not (tmp_path / "mlruns").exists()  # artifacts go beside the store, not into the working folder
    with contextlib.chdir(tmp_path):  # the user's next commands, in-process (no 8 s of imports each)
        models = run_cli("models")
        rows = json.loads(run_cli("models", "--json").stdout)
        listed = run_cli("request", "list", "--json")
    assert "champion" in models.stdout and "rfau" in models.stdout
    assert registered["version"] == 2 and [r["version"] for r in rows if "champion" in r["aliases"]] == [2]
    assert [r["gates_passed"] for r in rows] == [True, True]  # JSON booleans, not "true" strings
    assert '"fulfilled"' in listed.stdout
    print(f"local pipeline run (bootstrap + batch): {seconds:.0f} s")  # timing is reported, not asserted
