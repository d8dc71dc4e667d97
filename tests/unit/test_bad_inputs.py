"""Bad inputs through the `rfau` CLI (in-process, typer's CliRunner): one line naming the problem,
the exit code of its class (rfau.errors.ExitCode: 2 for what the user typed, 3 for bad data, files
or services), no traceback, and no change: no output folder, no registry version, no ledger record,
no request event (the whole test folder is compared byte for byte).

Each case is a function ``case(root) -> (arguments, extra environment)`` that prepares ``root``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rfau.errors import ExitCode
from tests.support.cli import run_cli

GOOD = {"request_id": "r1", "classes": ["3"], "reason": "gdpr", "received_at": "2026-01-01T00:00:00Z"}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
# the variables a case may set, all restored after each invocation (code run in-process exports
# MLFLOW_TRACKING_* through mlflow.set_tracking_uri and clean_tracking_uri)
ISOLATED = (
    "RFAU_TRACKING_URI",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "RFAU_REQUEST_STORE",
    "RFAU_STALE_AFTER_HOURS",
    "KFP_ENDPOINT",
)
Case = Callable[[Path], tuple[list[str], dict]]


USAGE, RUNTIME = ExitCode.USAGE, ExitCode.RUNTIME


def _cli(root: Path, args: list[str], **env):
    """`rfau ARGS` (tests.support.cli.run_cli) on the state folder ``root/.rfau``, ISOLATED restored after."""
    return run_cli(*args, **({k: None for k in ISOLATED} | {"RFAU_STATE_DIR": str(root / ".rfau")} | env))


def _write(root: Path, name: str, data: str | bytes | dict) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, dict):
        data = json.dumps(data)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return name


def _split_args(root: Path, request: str | bytes | dict, out: str = "out") -> list[str]:
    return ["split", _write(root, "req.json", request), "--out", out]


def _queued(root: Path) -> None:
    """An initialised request store with one pending request (no registry yet)."""
    res = _cli(root, ["request", "add", _write(root, "queued.json", GOOD)])
    assert res.returncode == 0, res.stderr


def _model(root: Path, **card_changes) -> list[str]:
    """A model folder whose card holds ``card_changes``, and a split: `rfau evaluate` arguments."""
    weights = b"not a checkpoint"
    card = {
        "architecture": "small_cnn",
        "arch_kwargs": {"width": 8},
        "classes": [str(i) for i in range(10)],
        "input_shape": [1, 8, 8],
        "dataset": "digits",
        "train_manifest_sha256": "0" * 64,
        "train_samples": 1,
        "holdout_fraction": 0.1,
        "holdout_salt": "rfau-holdout-v1",
        "weights_sha256": __import__("hashlib").sha256(weights).hexdigest(),
    }
    for key, value in card_changes.items():
        if key == "width":
            card["arch_kwargs"]["width"] = value
        else:
            card[key] = value
    _write(root, "model/model.safetensors", weights)
    _write(root, "model/model.json", card)
    assert _cli(root, _split_args(root, GOOD, "split")).returncode == 0
    return ["evaluate", "--model", "model", "--split", "split", "--out", "metrics.json"]


def _archive(root: Path, members: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return _write(root, "data.tar.gz", buf.getvalue())


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


def _read_only_parent(root: Path) -> str:
    """A folder this process cannot write into: as root (who ignores permission bits) sysfs."""
    if os.geteuid() == 0:
        return "/sys/rfau-bad-input/out"
    (root / "ro").mkdir()
    (root / "ro").chmod(0o555)
    return "ro/out"


def _after(setup: Callable[[Path], object], args: list[str], **env: str) -> Case:
    """A case that prepares ``root`` with ``setup`` first."""

    def case(root: Path):
        setup(root)
        return args, env

    return case


def _batch(*sets: str) -> Case:
    def case(root: Path):
        _queued(root)
        return ["batch", "run", "--workdir", "work", *(a for s in sets for a in ("--set", s))], {}

    return case


# name -> (case, what the error line names, exit code)
CASES: dict[str, tuple[Case, str, ExitCode]] = {
    # requests
    "request-nested-json": (
        lambda r: (["request", "add", _write(r, "d.json", "[" * 100000 + "]" * 100000)], {}),
        "nested too deeply",
        RUNTIME,
    ),
    "request-not-json": (lambda r: (_split_args(r, "{nope"), {}), "malformed JSON", RUNTIME),
    "request-oversize-file": (
        lambda r: (["request", "add", _write(r, "big.json", {**GOOD, "reason": "x" * (11 << 20)})], {}),
        "byte limit",
        RUNTIME,
    ),
    "request-id-with-path": (
        lambda r: (["request", "add", _write(r, "b.json", {**GOOD, "request_id": "../x"})], {}),
        "request_id",
        RUNTIME,
    ),
    "request-unknown-sample": (
        lambda r: (_split_args(r, {**GOOD, "classes": [], "sample_ids": ["digits/99999"]}), {}),
        "unknown sample ids",
        RUNTIME,
    ),
    "request-test-sample": (
        lambda r: (
            ["request", "add", _write(r, "b.json", {**GOOD, "classes": [], "sample_ids": ["digits/0"]})],
            {},
        ),
        "test split",
        RUNTIME,
    ),
    "request-unknown-class": (lambda r: (_split_args(r, {**GOOD, "classes": ["cat"]}), {}), "cat", RUNTIME),
    "request-every-class": (
        lambda r: (_split_args(r, {**GOOD, "classes": [str(i) for i in range(10)]}), {}),
        "every training sample",
        RUNTIME,
    ),
    "request-missing-file": (lambda r: (["split", "none.json", "--out", "out"], {}), "none.json", RUNTIME),
    "request-duplicate-id": (_after(_queued, ["request", "add", "queued.json"]), "r1", RUNTIME),
    "request-list-bad-state": (lambda r: (["request", "list", "--state", "done"], {}), "pending", USAGE),
    # datasets
    "dataset-missing": (
        lambda r: (_split_args(r, GOOD) + ["--dataset", "/no/such/data"], {}),
        "not found",
        RUNTIME,
    ),
    "dataset-member-dotdot": (
        lambda r: (
            _split_args(r, GOOD)
            + ["--dataset", _archive(r, {"train/a/1.png": _png(), "train/../x.png": _png()})],
            {},
        ),
        "'..'",
        RUNTIME,
    ),
    "dataset-not-an-archive": (
        lambda r: (_split_args(r, GOOD) + ["--dataset", _write(r, "data.tar.gz", "plain text")], {}),
        "data.tar.gz",
        RUNTIME,
    ),
    "dataset-without-test-images": (
        lambda r: (_split_args(r, GOOD) + ["--dataset", _archive(r, {"train/a/1.png": _png()})], {}),
        "no test/<class>/ images",
        RUNTIME,
    ),
    # model folders
    "model-negative-width": (lambda r: (_model(r, width=-4), {}), "negative size for width", RUNTIME),
    "model-empty-input-shape": (lambda r: (_model(r, input_shape=[]), {}), "input_shape", RUNTIME),
    "model-empty-weights-sha256": (lambda r: (_model(r, weights_sha256=""), {}), "weights_sha256", RUNTIME),
    "model-tampered-weights": (lambda r: (_model(r, weights_sha256="a" * 64), {}), "sha256", RUNTIME),
    "model-missing": (
        _after(_model, ["evaluate", "--model", "nomodel", "--split", "split", "--out", "m.json"]),
        "not a model folder",
        RUNTIME,
    ),
    # settings
    "set-device-foo": (
        _after(_model, ["unlearn", "-m", "model", "--split", "split", "--out", "out", "--set", "device=foo"]),
        "device 'foo'",
        USAGE,
    ),
    "batch-device-foo": (_batch('method_config={"device": "foo"}'), "device 'foo'", USAGE),
    "batch-device-cuda-before-claiming": (
        _batch('method_config={"device": "cuda"}'),
        "CUDA is not available",
        RUNTIME,
    ),
    "batch-target-module-the-model-lacks": (
        _batch('method_config={"target_modules": ["nope"]}'),
        "unknown LoRA target module 'nope'",
        USAGE,
    ),
    "batch-tap-the-model-lacks": (
        _batch('method_config={"taps": ["nope"]}'),
        "unknown tapped layer 'nope'",
        USAGE,
    ),
    "batch-unknown-method": (_batch("method=bogus"), "bogus", USAGE),
    "batch-unknown-parameter": (_batch("bogus=1"), "bogus", USAGE),
    "batch-negative-gate": (_batch('gates={"max_retain_drop": -1}'), "max_retain_drop", USAGE),
    # environment
    "env-tracking-not-a-uri": (
        _after(_queued, ["batch", "run", "-w", "work"], RFAU_TRACKING_URI="not-a-uri"),
        "tracking URI 'not-a-uri' is not valid",
        USAGE,
    ),
    "env-tracking-foo-scheme": (
        lambda r: (["models"], {"RFAU_TRACKING_URI": "foo://bar"}),
        "tracking URI 'foo://bar' is not valid",
        USAGE,
    ),
    "env-state-dir-is-a-file-batch": (
        lambda r: (["batch", "run", "-w", "work"], {"RFAU_STATE_DIR": _write(r, "state", "x")}),
        "is a file",
        USAGE,
    ),
    "env-state-dir-is-a-file-list": (
        lambda r: (["request", "list"], {"RFAU_STATE_DIR": _write(r, "state", "x")}),
        "is a file",
        USAGE,
    ),
    "env-state-dir-is-a-file-models": (
        lambda r: (["models"], {"RFAU_STATE_DIR": _write(r, "state", "x")}),
        "is a file",
        USAGE,
    ),
    "env-store-never-initialised": (
        lambda r: (["batch", "run", "-w", "work"], {}),
        "never been initialised",
        USAGE,
    ),
    "env-store-mistyped": (
        _after(_queued, ["batch", "run", "-w", "work"], RFAU_REQUEST_STORE="storr"),
        "never been initialised",
        USAGE,
    ),
    "env-stale-window-not-a-number": (
        _after(_queued, ["request", "list"], RFAU_STALE_AFTER_HOURS="six"),
        "RFAU_STALE_AFTER_HOURS",
        USAGE,
    ),
    # output folders
    "out-dot": (lambda r: (_split_args(r, GOOD, "."), {}), "not '.' or '..'", USAGE),
    "out-sub-dotdot": (
        lambda r: (_write(r, "sub/keep.txt", "keep") and _split_args(r, GOOD, "sub/.."), {}),
        "'.' or '..'",
        USAGE,
    ),
    "out-existing-file": (lambda r: (_split_args(r, GOOD, _write(r, "out", "keep")), {}), "is a file", USAGE),
    "out-foreign-folder": (
        lambda r: (_write(r, "out/mine.txt", "keep") and _split_args(r, GOOD), {}),
        "not an rfau output",
        USAGE,
    ),
    "out-read-only-parent": (
        lambda r: (_split_args(r, GOOD, _read_only_parent(r)), {}),
        "cannot write",
        RUNTIME,
    ),
    # pipeline commands
    "pipeline-bad-cron": (
        lambda r: (["pipeline", "schedule", "--endpoint", "http://127.0.0.1:9", "--cron", "61 * * * *"], {}),
        "outside 0-59",
        USAGE,
    ),
    "pipeline-cron-field-count": (
        lambda r: (["pipeline", "schedule", "--endpoint", "http://127.0.0.1:9", "--cron", "* *"], {}),
        "5 or 6 fields",
        USAGE,
    ),
    "pipeline-bad-namespace": (
        lambda r: (["pipeline", "submit", "--endpoint", "http://127.0.0.1:9", "--namespace", "Bad_NS!"], {}),
        "not a Kubernetes namespace",
        USAGE,
    ),
}
NEEDS_NO_CUDA = {"batch-device-cuda-before-claiming"}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=NO_CUDA) if n in NEEDS_NO_CUDA else n for n in CASES],
)
def test_bad_input_gets_one_line_and_changes_nothing(tmp_path, monkeypatch, name):
    case, message, code = CASES[name]
    monkeypatch.chdir(tmp_path)
    args, env = case(tmp_path)
    before = _snapshot(tmp_path)
    res = _cli(tmp_path, args, **env)  # an exception other than SystemExit fails the test here
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == code, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert len(errors) == 1 and message in errors[0], res.stderr  # one line, naming the problem
    # nothing written, replaced or left behind: no output, registry, ledger or request event
    assert _snapshot(tmp_path) == before
    assert not Path("/sys/rfau-bad-input").exists()


def test_cases_cover_the_issue(tmp_path):
    """At least 30 cases, in every group the issue lists, and both exit codes of bad input."""
    groups = {n.split("-")[0] for n in CASES}
    assert len(CASES) >= 30
    assert {"request", "dataset", "model", "set", "batch", "env", "out", "pipeline"} <= groups
    assert {code for _, _, code in CASES.values()} == {USAGE, RUNTIME}


def test_a_failed_batch_whose_release_fails_too_names_both(tmp_path, monkeypatch, seed_state):
    """The batch fails after claiming (the champion's weights were altered in the registry) and the
    disk is full when its requests are put back: the one error line names the batch's failure
    first, then the failed release; the request stays in progress for `rfau request release`."""
    seed_state(tmp_path / ".rfau")
    for weights in (tmp_path / ".rfau").rglob("model.safetensors"):
        weights.write_bytes(weights.read_bytes() + b"tampered")
    monkeypatch.chdir(tmp_path)
    _queued(tmp_path)
    fsync = os.fsync

    def disk_full_for_releases(fd: int) -> None:  # where a full disk reports it: at fsync
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name  # .000002-pending.json.<uuid>.rfau-tmp
        if "-pending.json." in name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_for_releases)
    res = _cli(tmp_path, ["batch", "run", "--workdir", "work"])
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert res.returncode == RUNTIME and "Traceback" not in res.stderr, res.stderr
    assert line.index("the weights were altered") < line.index("releasing its requests failed too"), line
    assert "No space left on device" in line
    monkeypatch.undo()
    from rfau.data.request_store import RequestState, RequestStore

    assert RequestStore.from_uri(tmp_path / ".rfau" / "store").get("r1").state is RequestState.IN_PROGRESS


def test_target_modules_are_checked_against_the_champion_before_claiming(tmp_path, monkeypatch, seed_state):
    """With a champion in the registry, its architecture (from its card) is what the settings are
    checked against; nothing is claimed, registered or recorded."""
    seed_state(tmp_path / ".rfau")
    monkeypatch.chdir(tmp_path)
    _queued(tmp_path)
    before = _snapshot(tmp_path)
    res = _cli(tmp_path, ["batch", "run", "-w", "work", "--set", 'method_config={"taps": ["conv1", "nope"]}'])
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert res.returncode == USAGE and "Traceback" not in res.stderr, res.stderr
    assert "unknown tapped layer 'nope'" in line
    assert _snapshot(tmp_path) == before
