"""The root loads each command's module only when that command runs (rfau.cli.COMMANDS, the CLI's
one table): `rfau --help` lists every command from the table alone, and `rfau request ...` starts
without torch, MLflow, scikit-learn or matplotlib. The processes are real ones: what a command
imports is what a fresh interpreter has loaded after it."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
from typer.main import get_command

from rfau.cli import COMMANDS, app
from tests.support.cli import subprocess_env

HEAVY = {"torch", "mlflow", "sklearn", "matplotlib", "peft", "boto3", "kfp"}
GROUP_MODULES = {where.split(":")[0] for where, _ in COMMANDS.values()}

# run `rfau ARGS` in this interpreter, then write what it loaded to the file named by argv[1]
PROBE = """
import json, sys
from rfau.cli import app
code = 0
try:
    app(sys.argv[2:], prog_name="rfau")
except SystemExit as e:
    code = e.code
loaded = sorted(sys.modules)
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": loaded}, f)
"""


def _probe(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, int, set[str]]:
    """`rfau ARGS` in a fresh interpreter -> (the process, the command's exit code, the modules
    loaded when it returned)."""
    report = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=subprocess_env(RFAU_STATE_DIR=str(tmp_path / "state"), COLUMNS="200"),
    )
    assert report.is_file(), done.stderr
    found = json.loads(report.read_text())
    return done, found["code"], set(found["modules"])


def _heavy(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules} & HEAVY


def _groups(modules: set[str]) -> set[str]:
    return modules & GROUP_MODULES


def test_every_entry_is_the_command_it_names():
    """Each table entry loads a command of its name whose help starts with the entry's text; a
    module of top-level commands has no command the table leaves out."""
    root = get_command(app)
    tops: dict[str, set[str]] = {}
    for name, (where, summary) in COMMANDS.items():
        cmd = root.commands[name]  # type: ignore[attr-defined]
        assert cmd.name == name
        assert inspect.cleandoc(cmd.help or "").split("\n\n")[0] == summary, name
        if where.count(":") == 2:
            tops.setdefault(where.rpartition(":")[0], set()).add(name)
    for app_where, names in tops.items():
        module, _, attr = app_where.partition(":")
        typer_app = getattr(import_module(module), attr)
        assert set(get_command(typer_app).commands) == names, app_where  # type: ignore[attr-defined]


def test_help_lists_every_command_without_importing_any(tmp_path):
    done, code, modules = _probe(tmp_path, "--help")
    assert code == 0, done.stderr
    listed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("│ ") and len(line) > 3}
    assert set(COMMANDS) <= listed, done.stdout
    assert not _groups(modules) and not _heavy(modules)


def test_a_command_imports_its_own_module_only(tmp_path):
    done, code, modules = _probe(tmp_path, "batch", "--help")
    assert code == 0, done.stderr
    assert _groups(modules) == {"rfau.cli.batch"}


def test_the_pipeline_commands_load_kfp_but_not_the_numeric_side(tmp_path):
    """compile, submit and schedule need kfp only; `pipeline run` loads the stages (and torch)
    when it checks the batch, through rfau.batch's lazy names."""
    done, code, modules = _probe(tmp_path, "pipeline", "compile", "--help")
    assert code == 0, done.stderr
    assert _heavy(modules) == {"kfp"}, sorted(_heavy(modules))


def _store_with_a_request(tmp_path: Path) -> str:
    """A request store (in ``tmp_path``) holding one pending request, made by `rfau request add`
    (checking the form only: it loads no heavy library either)."""
    store, req = tmp_path / "store", tmp_path / "r.json"
    req.write_text(
        json.dumps({"request_id": "r1", "classes": ["3"], "reason": "x", "received_at": "2026-01-01"})
    )
    done, code, modules = _probe(
        tmp_path, "request", "add", str(req), "--dataset", "none", "--store", str(store)
    )
    assert code == 0, done.stderr
    assert not _heavy(modules), sorted(_heavy(modules))
    return str(store)


@pytest.mark.parametrize(
    "args",
    [
        ["request", "list", "--help"],
        ["request", "add", "--help"],
        ["request", "release", "--stale", "--store", "{store}"],
        ["request", "reject", "r1", "--reason", "no such subject", "--store", "{store}"],
    ],
)
def test_request_commands_load_no_heavy_library(tmp_path, args):
    store = _store_with_a_request(tmp_path) if "{store}" in args else ""
    done, code, modules = _probe(tmp_path, *(a.format(store=store) for a in args))
    assert code == 0, done.stderr
    assert not _heavy(modules), sorted(_heavy(modules))
    assert _groups(modules) == {"rfau.cli.request"}


def _listed(tmp_path: Path) -> set[str]:
    """The heavy libraries `rfau request list` loads."""
    done, code, modules = _probe(tmp_path, "request", "list", "--store", _store_with_a_request(tmp_path))
    assert code == 0 and "r1" in done.stdout, done.stderr
    return _heavy(modules)


def test_request_list_loads_no_torch(tmp_path):
    assert "torch" not in _listed(tmp_path)
