"""Usage errors (a bad value, a missing option or argument, an unknown option or command) are one
line on stderr with exit code 2, as every other rfau error: no boxed usage block, nothing on stdout."""

from __future__ import annotations

import pytest

from tests.support.cli import run_cli, run_rfau

BOX = set("╭╮╰╯│─")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["pipeline", "compile", "--gpus", "two"], ["pipeline compile:", "'--gpus'", "valid integer"]),
        (["pipeline", "submit"], ["pipeline submit:", "Missing option '--endpoint'"]),
        (["request", "list", "--bogus"], ["request list:", "No such option: --bogus"]),
        (["nope"], ["No such command 'nope'"]),
        (["pipeline", "schedule", "list"], ["Missing option '--endpoint'"]),
        (["--quiet=3"], ["'--quiet' does not take a value"]),
    ],
)
def test_a_usage_error_is_one_line_with_exit_code_2(args, words):
    r = run_cli(*args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and r.stdout == "" and len(lines) == 1, (r.returncode, r.stdout, r.stderr)
    assert lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines[0]
    assert "--help" in lines[0] and not BOX & set(r.stderr)


def test_a_usage_error_is_one_line_from_the_installed_command(tmp_path):
    """The entry point as a shell runs it (not typer's test runner)."""
    r = run_rfau("pipeline", "compile", "--gpus", "two", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: rfau pipeline compile: Invalid value for '--gpus'"), lines[0]


def test_help_and_version_still_exit_0():
    r = run_cli("--help")
    assert r.returncode == 0 and "Exit codes" in r.stdout
    r = run_cli("pipeline", "schedule", "--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("list", "pause", "resume", "delete", "--cron"))
    assert run_cli("--version").stdout.startswith("rfau ")


def test_a_group_without_a_command_shows_its_help():
    r = run_cli("pipeline")
    assert r.returncode == 2 and "compile" in r.stdout + r.stderr and "schedule" in r.stdout + r.stderr
