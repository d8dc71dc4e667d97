"""The commands as scripts drive them: exit codes by class (0 ok, 1 a check found problems, 2 usage,
3 runtime), --json (one JSON document on stdout), --quiet, --version, --output; and bad input to the
operations commands: a clear error naming the problem, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.main import get_command

from rfau.cli import app
from rfau.errors import ExitCode
from tests.support.cli import subprocess_env

OK, CHECK_FAILED, USAGE, RUNTIME = ExitCode.OK, ExitCode.CHECK_FAILED, ExitCode.USAGE, ExitCode.RUNTIME
GOOD = {"request_id": "r1", "classes": ["3"], "reason": "gdpr", "received_at": "2026-01-01T00:00:00Z"}


@pytest.fixture
def run(cli):
    """`rfau ARGS` in-process on a scratch state folder (see conftest.cli)."""
    return cli


def test_request_add_rejects_bad_requests_and_writes_nothing(run, tmp_path):
    good = {
        "request_id": "ok-1",
        "sample_ids": ["digits/1"],
        "reason": "r",
        "received_at": "2026-11-27T00:00:00Z",
    }
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "a.json").write_text(json.dumps(good))
    (tmp_path / "reqs" / "b.json").write_text(
        json.dumps({**good, "request_id": "bad-1", "sample_ids": ["digits/0"]})
    )
    r = run("request", "add", "reqs")
    assert r.returncode == RUNTIME and "bad-1" in r.stderr and "test split" in r.stderr
    r = run("request", "list", "--json")  # the good one was not queued either: no store was made
    assert r.returncode == USAGE and r.stdout == "" and "never been initialised" in r.stderr
    r = run("request", "add", "missing.json")
    assert r.returncode == RUNTIME and "missing.json" in r.stderr
    (tmp_path / "reqs" / "b.json").unlink()
    assert run("request", "add", "reqs").returncode == 0
    r = run("request", "add", "reqs")  # the same id again
    assert r.returncode == RUNTIME and "ok-1" in r.stderr
    r = run("request", "list", "--state", "done")
    assert r.returncode == USAGE and "pending" in r.stderr


def test_batch_commands_name_the_bad_input(run, tmp_path):
    (tmp_path / "p.yaml").write_text("dataset: digits\nmethod_config: 3\nbogus: 1\n")
    r = run("batch", "split", "--params", "p.yaml", "--out", "b")
    assert r.returncode == USAGE and "method_config" in r.stderr and "bogus" in r.stderr
    assert not (tmp_path / "b").exists()
    (tmp_path / "q.yaml").write_text("gates: {max_retain_drop: -1}\n")
    r = run("batch", "split", "--params", "q.yaml", "--out", "b")
    assert r.returncode == USAGE and "max_retain_drop" in r.stderr
    r = run("batch", "unlearn", "--batch", "nowhere", "--out", "m")
    assert r.returncode == RUNTIME and "not a batch folder" in r.stderr and not (tmp_path / "m").exists()
    r = run("batch", "split", "--set", "dataset=/no/such/data", "--out", "b")
    assert r.returncode == RUNTIME and "not found" in r.stderr and not (tmp_path / "b").exists()


def test_a_batch_with_nothing_pending_exits_cleanly(run, tmp_path):
    from rfau.data.request_store import RequestStore

    # a store nobody ever initialised is a misconfiguration (a mistyped path), not "nothing to do"
    r = run("batch", "run", "--workdir", "w")
    assert r.returncode == USAGE and "never been initialised" in r.stderr
    RequestStore.open(tmp_path / ".rfau" / "store", create=True)
    r = run("batch", "run", "--workdir", "w")
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = run("audit", "verify", "--no-weights")
    assert r.returncode == 0 and "0 record(s)" in r.stdout


# --- scripting: exit codes, --json, --quiet, --version, --output ------------------------------------


def _leaf_commands(group=None, prefix=()):
    """Every command of `rfau` as (words, click command)."""
    group = group or get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        if hasattr(cmd, "commands"):
            yield from _leaf_commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def _options(cmd) -> list[list[str]]:
    return [p.opts for p in cmd.params]


def _start(*args: str, cwd: Path) -> subprocess.Popen:
    """The installed `rfau` entry point, started (collect it with ``_finish``)."""
    rfau = str(Path(sys.executable).with_name("rfau"))
    env = subprocess_env(RFAU_STATE_DIR=str(cwd / ".rfau"))
    return subprocess.Popen(
        [rfau, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_version_of_the_installed_entry_point(tmp_path, run):
    r = _finish(_start("--version", cwd=tmp_path))
    assert (r.returncode, r.stdout) == (OK, f"rfau {version('rfau')}\n"), r.stderr
    assert run("-V").stdout == r.stdout


def test_usage_and_runtime_errors_exit_2_and_3_from_the_entry_point(tmp_path):
    """What a shell script sees: the exit code by class, one line on stderr, nothing on stdout
    (also with --json)."""
    started = [  # at once: each spends most of its time importing
        _start("request", "list", "--state", "done", "--json", cwd=tmp_path),
        _start("split", "none.json", "--out", "o", "--json", cwd=tmp_path),
    ]
    usage, runtime = map(_finish, started)
    for r, code, needle in ((usage, USAGE, "--state"), (runtime, RUNTIME, "none.json")):
        (line,) = r.stderr.strip().splitlines()
        assert r.returncode == code and line.startswith("error:") and needle in line, r.stderr
        assert r.stdout == ""


def test_exit_codes_by_class(run, tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(GOOD))
    assert run("request", "add", "r.json").returncode == OK
    assert run("request", "list", "--bogus").returncode == USAGE  # click's own usage error
    assert run("request", "release").returncode == USAGE  # neither an id nor --stale
    assert run("request", "cancel", "nobody").returncode == USAGE  # an id the store does not hold
    assert run("audit", "show", "r1").returncode == USAGE  # pending: in no ledger record
    assert run("request", "add", "r.json").returncode == RUNTIME  # the file's request is queued already
    (tmp_path / "state").write_text("x")
    assert run("request", "list", RFAU_STATE_DIR="state").returncode == USAGE  # a setting names a file
    (tmp_path / "corrupt.json").write_text("{nope")
    assert run("split", "corrupt.json", "--out", "s").returncode == RUNTIME


def test_a_batch_whose_gate_failed_exits_1_and_its_json_says_why(run, tmp_path, seed_state):
    """The batch completes (a version is registered) but is not promoted: `batch run` exits 1,
    with --json its outcome on stdout; the ledger it recorded verifies (exit 0), a tampered one
    does not (exit 1)."""
    seed_state(tmp_path / ".rfau")
    (tmp_path / "r.json").write_text(json.dumps(GOOD))
    assert run("request", "add", "r.json").returncode == OK
    # "original" leaves the model as it is: the class is not forgotten, the class-wise gates fail
    r = run(
        "batch", "run", "-w", "work", "--set", "method=original", "--set", 'escalation=["original"]', "--json"
    )
    assert r.returncode == CHECK_FAILED, r.stderr
    outcome = json.loads(r.stdout)
    assert outcome["request_ids"] == ["r1"] and outcome["registered"]["promoted"] is False
    assert outcome["registered"]["gates_passed"] is False
    assert json.loads(run("request", "list", "--json").stdout)[0]["state"] == "pending"
    verified = run("audit", "verify", "--no-weights", "--json")
    assert verified.returncode == OK and json.loads(verified.stdout)["records"] == 1
    from rfau.audit.trail import LEDGER_KEY, AuditTrail
    from rfau.tracking.settings import TrackingSettings

    trail = AuditTrail.open(str(tmp_path / ".rfau" / "store"), TrackingSettings(state_dir=tmp_path / ".rfau"))
    trail.store.put_bytes(LEDGER_KEY, trail.ledger_bytes().replace(b'"r1"', b'"r0"', 1))
    broken = run("audit", "verify", "--no-weights", "--json")
    assert broken.returncode == CHECK_FAILED and json.loads(broken.stdout)["intact"] is False
    assert json.loads(broken.stdout)["problems"] and "FAIL" in broken.stderr


def test_batch_register_exits_1_when_a_gate_failed_so_dvc_repro_fails(run, tmp_path, seed_state):
    """The stage-by-stage batch (what dvc.yaml runs): the register stage of a batch whose gates
    failed exits 1 like `batch run`, so `dvc repro` stops instead of reporting success."""
    seed_state(tmp_path / ".rfau")
    (tmp_path / "r.json").write_text(json.dumps(GOOD))
    assert run("request", "add", "r.json").returncode == OK
    for args in (
        ("split", "--out", "b/data"),
        (
            "unlearn",
            "--batch",
            "b/data",
            "--out",
            "b/model",
            "--set",
            "method=original",
            "--set",
            'escalation=["original"]',
        ),
        ("evaluate", "--batch", "b/data", "--model", "b/model", "--out", "b/evaluation"),
    ):
        r = run("batch", *args)
        assert r.returncode == OK, r.stderr
    stages = ("--batch", "b/data", "--model", "b/model", "--evaluation", "b/evaluation")
    r = run("batch", "register", *stages, "--out", "b/registered", "--json")
    assert r.returncode == CHECK_FAILED, r.stderr
    assert json.loads(r.stdout)["gates_passed"] is False
    assert json.loads(run("request", "list", "--json").stdout)[0]["state"] == "pending"


def test_every_command_has_json_and_every_out_has_output():
    """--json on every command (each prints a result); an output path is always --out / --output
    (-o), never another name for the same thing."""
    for words, cmd in _leaf_commands():
        opts = _options(cmd)
        assert ["--json"] in opts, f"rfau {' '.join(words)} has no --json"
        for o in opts:
            if "--out" in o or "--output" in o:
                assert o == ["--out", "--output", "-o"], (words, o)


def test_json_results_parse(run, tmp_path, digits_original):
    (tmp_path / "r.json").write_text(json.dumps(GOOD))
    split = json.loads(run("split", "r.json", "--output", "split", "--json").stdout)
    assert split["request_ids"] == ["r1"] and (tmp_path / "split" / "split.json").is_file()
    assert json.loads(run("request", "add", "r.json", "--json").stdout) == {"added": ["r1"]}
    (listed,) = json.loads(run("request", "list", "--json").stdout)
    assert listed["state"] == "pending"
    cancelled = json.loads(run("request", "cancel", "r1", "--json").stdout)
    assert cancelled["state"] == "cancelled"
    assert json.loads(run("request", "release", "--stale", "--json").stdout) == []
    methods = json.loads(run("methods", "--json").stdout)
    assert "rfau" in [m["method"] for m in methods]
    rank = next(
        s for s in json.loads(run("methods", "rfau", "--json").stdout)["settings"] if s["name"] == "rank"
    )
    assert rank["default"] >= 1
    assert json.loads(run("models", "--json").stdout) == []
    assert json.loads(run("audit", "verify", "--no-weights", "--json").stdout)["intact"] is True
    compiled = json.loads(run("pipeline", "compile", "-o", "p.yaml", "--json").stdout)
    assert Path(compiled["pipeline"]).is_file()
    model = str(digits_original / "model")
    ev = run("evaluate", "-m", model, "--split", "split", "--out", "m.json", "--json")
    metrics = json.loads(ev.stdout)
    assert metrics == json.loads((tmp_path / "m.json").read_text()) and metrics["regime"] == "class"
    table = run("evaluate", "-m", model, "--split", "split", "--out", "m2.json").stdout
    assert "UA" in table and "MIA conf." in table and "{" not in table  # a table, not a Python dict


def test_quiet_prints_only_the_json_result_and_no_progress(run, tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(GOOD))
    r = run("-q", "request", "add", "r.json")
    assert (r.returncode, r.stdout) == (OK, "")
    r = run("--quiet", "request", "list", "--json")
    assert json.loads(r.stdout)[0]["request_id"] == "r1"
    assert run("-q", "methods").stdout == ""
    train = ("train", "--epochs", "1", "--out")
    loud = run(*train, "m1", RFAU_QUIET="0")  # progress: one line per epoch on stderr
    quiet = run("-q", *train, "m2", RFAU_QUIET="0")
    assert loud.returncode == quiet.returncode == OK
    assert "1/1" in loud.stderr and "1/1" not in quiet.stderr and quiet.stdout == ""
    assert "trained" in loud.stdout
    assert os.environ.get("RFAU_QUIET") == "1"  # --quiet set it for the command only (conftest's)
    r = run("-q", "request", "list", "--state", "done")
    assert r.returncode == USAGE and r.stderr.startswith("error:")  # errors still on stderr
