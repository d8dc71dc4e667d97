"""An operator's output paths: every command of `rfau --help` that writes an output path keeps to
one rule (rfau.io): a new path is created, an empty folder is used, the command's own earlier
output is replaced, and anything else (a user's file, a user's folder, another command's output)
is refused with exit 2 and one line, before any work and with every byte left as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer

from rfau.errors import ExitCode
from rfau.io import OUTPUT_MARKER, atomic_dir, fresh_dir, output_kind
from tests.support.cli import run_cli

GOOD = {"request_id": "r1", "classes": ["3"], "reason": "gdpr", "received_at": "2026-01-01T00:00:00Z"}
OUT = "target"  # where every case points the command's output

# every command with an output path -> its arguments (OUT stands for the output path); the other
# paths need not exist: the output is checked before anything else is read
COMMANDS: dict[str, list[str]] = {
    "split": ["split", "req.json", "--out", OUT],
    "train": ["train", "--out", OUT],
    "unlearn": ["unlearn", "--model", "m", "--split", "s", "--out", OUT],
    "evaluate": ["evaluate", "--model", "m", "--split", "s", "--out", OUT],
    "run": ["run", "--workdir", OUT],
    "bench": ["bench", "digits", "--out", OUT],
    "bench-memory": ["bench-memory", OUT],
    "batch split": ["batch", "split", "--out", OUT],
    "batch unlearn": ["batch", "unlearn", "--batch", "b", "--out", OUT],
    "batch evaluate": ["batch", "evaluate", "--batch", "b", "--model", "m", "--out", OUT],
    "batch register": [
        "batch",
        "register",
        "--batch",
        "b",
        "--model",
        "m",
        "--evaluation",
        "e",
        "--out",
        OUT,
    ],
    "batch run": ["batch", "run", "--workdir", OUT],
    "pipeline compile": ["pipeline", "compile", "--out", OUT],
    "pipeline run": ["pipeline", "run", "--local", "--root", OUT],
    "audit show": ["audit", "show", "r1", "--out", OUT],
    "model import": ["model", "import", "src", "--family", "timm", "--dataset", "digits", "--out", OUT],
}
FILE_OUTPUTS = {"evaluate", "pipeline compile"}


def _commands_with_outputs() -> set[str]:
    """Every command in `rfau --help` that takes an output path (--out, --workdir, --root or an
    out_dir argument), by introspection: a new command cannot slip past this test."""
    from rfau.cli import app

    def walk(cmd, path=()):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield " ".join(path), cmd

    found = set()
    for name, cmd in walk(typer.main.get_command(app)):
        for p in cmd.params:
            if {"--out", "--workdir", "--root"} & set(getattr(p, "opts", [])) or p.name == "out_dir":
                found.add(name)
    return found


def test_the_walk_covers_every_command_with_an_output():
    assert _commands_with_outputs() == set(COMMANDS)


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _cli(root: Path, args: list[str]):
    return run_cli(*args, RFAU_STATE_DIR=str(root / ".rfau"))


def _refused(root: Path, args: list[str], message: str) -> None:
    before = _snapshot(root)
    res = _cli(root, args)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == ExitCode.USAGE, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert len(errors) == 1 and message in errors[0], res.stderr
    assert "--force" not in res.stderr  # no command has it, so none offers it
    assert _snapshot(root) == before  # nothing written, replaced or left behind


def _user_file(root: Path) -> None:
    (root / OUT).write_bytes(b"q3 revenue,12\n")


def _user_folder(root: Path) -> None:
    """What `rfau run -w DIR` deleted on the old code: metrics, an app database and a store."""
    for name, data in {
        "metrics/q3.csv": b"a,b\n1,2\n",
        "state/app.db": b"\x00db",
        "store/x.json": b"{}",
    }.items():
        (root / OUT / name).parent.mkdir(parents=True, exist_ok=True)
        (root / OUT / name).write_bytes(data)


def _other_commands_folder(root: Path, command: str) -> None:
    """An output folder of another command (an unlearned model: what `audit show --out` replaced)."""
    other = "train" if command == "unlearn" else "unlearn"
    (root / OUT).mkdir()
    (root / OUT / "model.safetensors").write_bytes(b"weights")
    (root / OUT / OUTPUT_MARKER).write_text(other + "\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_users_file_is_refused_and_kept(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    _user_file(tmp_path)
    _refused(tmp_path, COMMANDS[command], "was not written by" if command in FILE_OUTPUTS else "is a file")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_users_folder_is_refused_and_kept(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    _user_folder(tmp_path)
    _refused(tmp_path, COMMANDS[command], "is a folder" if command in FILE_OUTPUTS else "not an rfau output")


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - FILE_OUTPUTS))
def test_another_commands_output_is_refused_and_kept(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    _other_commands_folder(tmp_path, command)
    _refused(tmp_path, COMMANDS[command], "was written by `rfau")


def test_an_output_of_an_older_rfau_is_refused(tmp_path, monkeypatch):
    """Folders written before the marker named the command say only ``output``: which command
    wrote them is not known, so none replaces them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / OUT).mkdir()
    (tmp_path / OUT / OUTPUT_MARKER).write_text("output\n")
    (tmp_path / OUT / "model.json").write_text("{}")
    (tmp_path / "req.json").write_text(json.dumps(GOOD))
    _refused(tmp_path, COMMANDS["split"], "older rfau")


def test_a_file_inside_another_commands_output_is_refused(tmp_path, monkeypatch):
    """`evaluate --out` onto an evaluation inside a batch's evaluation folder (its evidence)."""
    monkeypatch.chdir(tmp_path)
    with atomic_dir(tmp_path / "evaluation", "batch evaluate") as tmp:
        (tmp / "after.json").write_text("{}")
    args = ["evaluate", "--model", "m", "--split", "s", "--out", "evaluation/after.json"]
    _refused(tmp_path, args, "an output of `rfau batch evaluate`")


def test_a_path_too_long_is_one_line(tmp_path, monkeypatch):
    """A name longer than the filesystem takes (ENAMETOOLONG) is what the user typed: exit 2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "req.json").write_text(json.dumps(GOOD))
    for args in (
        ["split", "req.json", "--out", "x" * 300],
        ["evaluate", "-m", "m", "--split", "s", "--out", "y" * 300],
    ):
        _refused(tmp_path, args, "File name too long")


def test_split_replaces_its_own_output_and_uses_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "req.json").write_text(json.dumps(GOOD))
    (tmp_path / OUT).mkdir()
    assert _cli(tmp_path, COMMANDS["split"]).returncode == 0  # an empty folder is used
    assert output_kind(tmp_path / OUT) == "split"
    (tmp_path / "req.json").write_text(json.dumps({**GOOD, "classes": ["4"]}))
    res = _cli(tmp_path, COMMANDS["split"])  # its own output is replaced
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / OUT / "split.json").read_text())["forget_classes"] == ["4"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries


def test_pipeline_compile_replaces_only_its_own_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cli(tmp_path, ["pipeline", "compile", "--out", "p.yaml"]).returncode == 0
    first = (tmp_path / "p.yaml").read_bytes()
    res = _cli(tmp_path, ["pipeline", "compile", "--out", "p.yaml", "--gpus", "2"])
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "p.yaml").read_bytes() != first
    (tmp_path / "other.yaml").write_text("# PIPELINE DEFINITION\n# Name: someone-elses\n")
    _refused(tmp_path, ["pipeline", "compile", "--out", "other.yaml"], "was not written by")


def test_evaluate_replaces_only_an_evaluation(tmp_path, monkeypatch, digits_original):
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "-m", str(digits_original / "model"), "--split", str(digits_original / "split")]
    (tmp_path / "m.json").write_bytes((digits_original / "metrics.json").read_bytes())
    res = _cli(tmp_path, [*args, "--out", "m.json"])
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "m.json").read_text())["model_weights_sha256"]
    (tmp_path / "notes.json").write_text('{"mine": true}')
    _refused(tmp_path, [*args, "--out", "notes.json"], "was not written by `rfau evaluate`")


def test_fresh_dir_puts_the_earlier_run_back_when_the_new_one_fails(tmp_path):
    """`rfau run -w`: an earlier run's folder is replaced only by a run that finished."""
    out = tmp_path / "run"
    with fresh_dir(out, "run"):
        (out / "summary.json").write_text("old")
    with pytest.raises(RuntimeError), fresh_dir(out, "run"):
        assert not (out / "summary.json").exists()  # the new run starts from an empty folder
        (out / "partial").write_text("x")
        raise RuntimeError("a stage failed")
    assert (out / "summary.json").read_text() == "old" and not (out / "partial").exists()
    assert sorted(os.listdir(tmp_path)) == ["run"]
    with fresh_dir(out, "run"):
        (out / "summary.json").write_text("new")
    assert (out / "summary.json").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["run"]


# --- credentials in URIs ------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# what a user types into a URI's userinfo unencoded: anything but whitespace (which ends a URI in
# a log line) and "%" (an escape); the user name holds no ":" (that separates the password)
SECRET = st.text(st.characters(blacklist_categories=("Z", "C"), blacklist_characters="%"), min_size=1)


@settings(max_examples=300, deadline=None)
@given(user=SECRET.filter(lambda u: ":" not in u), password=SECRET)
def test_no_printed_uri_holds_the_password(user, password):
    from rfau.tracking.settings import TrackingSettings, redact

    uri = f"http://{user}:{password}@mlflow.internal:5000/api"
    line = f"error: cannot reach {uri}: connection refused; tracking URI {uri!r}"
    shown = redact(line)
    clean = "error: cannot reach http://***@mlflow.internal:5000/api: connection refused; tracking URI "
    if password not in clean + repr("http://***@mlflow.internal:5000/api"):  # not a word of the rest
        assert password not in shown, shown
    settings_shown = TrackingSettings(tracking_uri=uri).redacted_uri()
    assert settings_shown == "http://***@mlflow.internal:5000/api"
    with pytest.MonkeyPatch.context() as m:
        m.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        m.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        assert TrackingSettings(tracking_uri=uri).uri() == "http://mlflow.internal:5000/api"
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == password  # all of it, for MLflow to send


@pytest.mark.parametrize("password", ["pa/ss", "p@ss/w@rd", "s3cr3t:with:colons", "a'b\"c"])
def test_an_error_line_never_shows_the_password(tmp_path, monkeypatch, password):
    """Through the CLI: an invalid tracking URI, and an unreachable one (the service's message)."""
    monkeypatch.chdir(tmp_path)
    for uri in (f"foo://admin:{password}@mlflow:5000", f"http://admin:{password}@127.0.0.1:9"):
        res = run_cli("models", RFAU_TRACKING_URI=uri, MLFLOW_TRACKING_PASSWORD=None)
        assert res.returncode in (ExitCode.USAGE, ExitCode.RUNTIME), res.stderr
        assert password not in res.stdout + res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_path_with_an_at_sign_is_no_password():
    from rfau.tracking.settings import TrackingSettings, redact

    db = "sqlite:////home/u@corp/mlflow.db"
    assert redact(f"store {db}") == f"store {db}"
    assert TrackingSettings(tracking_uri=db).uri() == db
    assert redact("at http:///:1@h:5000") == "at http://***@h:5000"  # a user named "/" is masked
