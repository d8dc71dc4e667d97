"""The command line as a user drives it, in this process through typer's runner: every option
explained, the stages one by one as dvc runs them, bad input (the installed entry point itself:
test_cli_ops.py; `rfau run`: test_run_job.py)."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import run_cli

STATE: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _scratch_state(tmp_path_factory):
    """The registry the commands write to: a scratch folder, never the checkout's .rfau/."""
    STATE["RFAU_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))


@pytest.mark.parametrize("command", ["split", "train", "unlearn", "evaluate", "run", "methods"])
def test_every_option_is_explained(command):
    from typer.main import get_command
    from typer.testing import CliRunner

    from rfau.cli import app

    cmd = get_command(app).commands[command]  # type: ignore[attr-defined]
    options = [p for p in cmd.params if p.name != "help"]
    res = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert options, f"{command} has no options to explain"
    for p in options:
        assert (p.help or "").strip(), f"rfau {command} {p.opts[0]} has no help text"
        assert p.opts[0] in res.output, f"rfau {command} --help does not show {p.opts[0]}"


@pytest.mark.e2e
def test_stage_by_stage_like_dvc_would(tmp_path):
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps(
            {
                "request_id": "r-1",
                "classes": ["7"],
                "reason": "consent withdrawn",
                "received_at": "2026-11-27T10:00:00Z",
            }
        )
    )
    # in-process: the entry point itself is run by test_main_job_end_to_end and the DVC tests
    assert run_cli("split", str(req), "--out", str(tmp_path / "split"), **STATE).returncode == 0
    res = run_cli("train", "--out", str(tmp_path / "orig"), "--epochs", "5", **STATE)
    assert res.returncode == 0, res.stderr
    res = run_cli(
        "unlearn",
        "--model",
        str(tmp_path / "orig"),
        "--split",
        str(tmp_path / "split"),
        "--out",
        str(tmp_path / "u"),
        "--set",
        "epochs=5",
        "--set",
        "rank=2",
        **STATE,
    )
    assert res.returncode == 0, res.stderr
    assert "trainable parameters" in res.stdout
    assert json.loads((tmp_path / "u" / "unlearn.json").read_text())["config"]["rank"] == 2
    res = run_cli(
        "evaluate",
        "--model",
        str(tmp_path / "u"),
        "--split",
        str(tmp_path / "split"),
        "--out",
        str(tmp_path / "m.json"),
        **STATE,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "m.json").read_text())["ua"] >= 90


@pytest.mark.parametrize(
    "args,needle",
    [
        (["split", "{bad}", "--out", "{out}"], "unknown sample ids"),
        (["split", "{missing}", "--out", "{out}"], "no such request file"),
        (["split", "{good}", "--out", "{out}", "--dataset", "/nope/data"], "not found"),
        (["unlearn", "--model", "{tmp}/nomodel", "--split", "{tmp}/nosplit", "--out", "{out}"], "split.json"),
        (["run", "--scenario", "bogus", "--workdir", "{out}"], "--scenario"),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, args, needle):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "request_id": "r-9",
                "sample_ids": ["digits/99999"],
                "reason": "x",
                "received_at": "2026-11-27T10:00:00Z",
            }
        )
    )
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {"request_id": "r-1", "classes": ["1"], "reason": "x", "received_at": "2026-11-27T10:00:00Z"}
        )
    )
    subs = {
        "bad": str(bad),
        "good": str(good),
        "missing": str(tmp_path / "none.json"),
        "out": str(tmp_path / "out"),
        "tmp": str(tmp_path),
    }
    res = run_cli(*(a.format(**subs) for a in args), **STATE)  # a traceback would fail the test here
    assert res.returncode != 0
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
