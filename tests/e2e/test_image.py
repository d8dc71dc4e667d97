"""The component image and the set-up it is built from.

Cheap, in every run: the CPU torch resolves, as on a fresh machine, without any nvidia/triton
package (pip's --dry-run --report); the image's set (what `make wheelhouse` packs) and the served
model's requirements are closed under the pins (offline, from the installed metadata); the
container settings come from one place.

Marked ``image`` (deselected by default, `make image-test` runs them after `make image`): pip's
fresh resolve of the whole image set (a minute or two of metadata downloads), and the demo
deletion pipeline with every task inside the image, through kfp.local's DockerRunner and podman's
Docker API, against the same pipeline with the subprocess runner: the same champion, the same
ledger record. It skips, naming why, where podman or the image is not there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import run_rfau

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("RFAU_IMAGE", "ghcr.io/rfau/rfau:0.1.0")
GPU_ONLY = ("nvidia-", "triton", "cuda-")
# pip's own verdicts when a source is not there (no network, no CPU index, no local wheel)
UNREACHABLE = ("No matching distribution found", "Could not find a version", "NewConnectionError")


def dry_run(*requirements: str) -> dict:
    """pip's report of installing ``requirements`` into an empty environment (nothing installed
    counts), from the sources this machine's pip is configured with and PyPI's CPU torch index where
    it answers (as `make setup` does)."""
    import urllib.request

    from rfau.tracking.served_model import TORCH_CPU_INDEX

    try:
        urllib.request.urlopen(TORCH_CPU_INDEX + "/", timeout=5).close()
        index = ["--extra-index-url", TORCH_CPU_INDEX]
    except OSError:
        index = []
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        + ["--disable-pip-version-check", "--retries", "0", "--timeout", "20", "--report", "-"]
        + index
        + list(requirements),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0 and any(u in proc.stderr for u in UNREACHABLE):
        pytest.skip(f"a package source is unreachable here: {proc.stderr.strip().splitlines()[-1][:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolved(report: dict) -> dict[str, str]:
    return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}


def test_cpu_torch_resolves_without_gpu_packages():
    """torch as the set-up and the served model's requirements pin it, resolved as on a fresh
    machine: the CPU build and its few dependencies, not one nvidia/triton/cuda package (PyPI's
    torch==2.13.0 is the CUDA build with 19 of them). Seconds: torch's own dependencies only."""
    from rfau.tracking.served_model import TORCH_CPU_INDEX, served_requirements

    served = served_requirements()
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in served and "torch==2.13.0+cpu" in served
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH ?= torch==2.13.0+cpu" in makefile and f"TORCH_INDEX ?= {TORCH_CPU_INDEX}" in makefile
    got = resolved(dry_run("-c", "constraints.txt", "torch==2.13.0+cpu"))
    assert got["torch"] == "2.13.0+cpu"
    assert not [n for n in got if n.startswith(GPU_ONLY)], sorted(got)


def pins() -> dict[str, str]:
    return {
        canonical(name): version
        for name, _, version in (
            line.partition("==")
            for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")
        )
    }


def test_the_image_set_is_closed_under_the_pins():
    """Offline, from the installed metadata (the set-up installed it under constraints.txt): the
    image's set (rfau without extras) and the served model's requirements, closed over their
    dependencies, are all pinned, installed at their pins, and satisfy every requirement among them;
    CPU torch, no GPU package. A pinned set that satisfies itself is what a fresh resolve with
    those constraints must return (`make wheelhouse` and the `image` test below resolve it for real)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.version import Version

    from rfau.tracking.served_model import served_requirements

    pinned = pins()
    todo = [Requirement(r) for r in served_requirements() if not r.startswith("-")] + [Requirement("rfau")]
    seen: dict[str, str] = {}
    unmet = []
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        try:
            version = distribution(name).version
        except PackageNotFoundError:
            unmet.append(f"{req} (not installed)")
            continue
        if not req.specifier.contains(version, prereleases=True):
            unmet.append(f"{req} (installed {version})")
        if name in seen:
            continue
        seen[name] = version
        for line in distribution(name).requires or []:
            dep = Requirement(line)
            if dep.marker is None or dep.marker.evaluate({"extra": ""}):
                todo.append(dep)
    assert not unmet, unmet
    assert seen["torch"] == "2.13.0+cpu" and pinned["torch"] == "2.13.0"
    assert not [n for n in seen if n.startswith(GPU_ONLY)], sorted(seen)
    unpinned = sorted(n for n in seen if n != "rfau" and n not in pinned)
    assert not unpinned, f"needed but not pinned in constraints.txt: {unpinned}"
    off = {
        n: (v, pinned[n])
        for n, v in seen.items()
        if n in pinned and n != "torch" and Version(v) != Version(pinned[n])
    }
    assert not off, off
    assert {"mlflow", "peft", "kfp", "dvc", "boto3"} <= set(seen)


@pytest.mark.image
def test_image_requirement_set_resolves_to_the_pins():
    """The image's requirement set (make wheelhouse) and the served model's requirements, resolved
    together as on a fresh machine: CPU torch, no GPU package, every package at its pin in
    constraints.txt (the served ones too). Fetches every wheel's metadata (a minute or two): with
    the image tests; the suite checks the same set offline (test_the_image_set_is_closed_under_the_pins)."""
    from rfau.tracking.served_model import served_requirements

    t0 = time.time()
    served = [arg for r in served_requirements() for arg in r.split()]
    got = resolved(dry_run("-c", "constraints.txt", "torch==2.13.0+cpu", ".", *served))
    pins_ = pins()
    assert got["torch"] == "2.13.0+cpu"
    assert not [n for n in got if n.startswith(GPU_ONLY)], sorted(got)
    unpinned = sorted(n for n in got if n != "rfau" and n not in pins_)
    assert not unpinned, f"resolved but not pinned in constraints.txt: {unpinned}"
    off = {n: (v, pins_[n]) for n, v in got.items() if n in pins_ and n != "torch" and v != pins_[n]}
    assert not off, off
    print(f"dry run of the image's set: {len(got)} packages in {time.time() - t0:.1f} s")


def test_the_wheel_carries_every_rfau_package():
    """The image installs rfau's wheel, not the checkout: every package folder must be listed."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(d.relative_to(ROOT).parts)
        for d in (ROOT / "rfau").rglob("*")
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    } | {"rfau"}
    assert folders - listed == set(), "package folders missing from pyproject's [tool.setuptools] packages"


def test_container_settings_come_from_one_place(monkeypatch, tmp_path):
    """`make image` takes the build flags, the container runner its settings, from
    rfau.pipelines.container; an empty setting leaves the engine's default."""
    script = ROOT / "pipelines" / "container.py"

    def flags(action: str, engine: str, **env: str) -> str:
        return subprocess.run(
            ["python3", str(script), "flags", action, engine],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        ).stdout.strip()

    assert flags("run", "podman") == "--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
    assert flags("build", "docker") == "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
    assert flags("run", "podman", RFAU_CONTAINER_RUNTIME="", RFAU_CONTAINER_ULIMITS="") == ""
    assert "call CONTAINER_FLAGS,build" in (ROOT / "Makefile").read_text()

    from rfau.errors import UsageError
    from rfau.pipelines.container import docker_runner, host_paths

    monkeypatch.setenv("RFAU_CONTAINER_ULIMITS", "nofile=lots")
    with pytest.raises(UsageError, match="NAME=SOFT:HARD"):
        docker_runner({}, tmp_path / "unused-state")
    # each host folder the tasks use is mounted once, at its own path
    state, model = tmp_path / "x" / ".rfau", tmp_path / "models" / "m"
    (state / "store").mkdir(parents=True)
    model.mkdir(parents=True)
    args = {"store": str(state / "store"), "dataset": "digits", "base_model_uri": str(model / "card.json")}
    (model / "card.json").write_text("{}")
    assert set(host_paths(args, state)) == {state, model}
    assert host_paths({"dataset": str(tmp_path / "absent")}, state) == [state]


def test_runner_options_are_checked_before_anything_runs(cli, tmp_path):
    bad = cli("pipeline", "run", "--local", "--runner", "kubernetes")
    assert bad.returncode == 2 and "--runner must be one of subprocess, container" in bad.stderr
    stray = cli("pipeline", "run", "--local", "--image", "x:1")
    assert stray.returncode == 2 and "--image applies to --runner container only" in stray.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / ".rfau").exists()
    # no engine that answers: one line, exit 3, and no demo request queued
    dead = cli("pipeline", "run", "--local", "--runner", "container", DOCKER_HOST="unix:///nonexistent.sock")
    assert dead.returncode == 3 and "DOCKER_HOST=unix:///nonexistent.sock does not answer" in dead.stderr
    assert not list((tmp_path / ".rfau").rglob("*.json"))


# --- the pipeline inside the image -----------------------------------------------------------------


def podman_problem() -> str | None:
    """Why the demo pipeline cannot run in the image here, or None."""
    from rfau.pipelines.container import cli_flags

    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc)"
    has = subprocess.run(["podman", "image", "exists", IMAGE], capture_output=True, check=False)
    if has.returncode != 0:
        return f"the image {IMAGE} is not built (make image)"
    probe = subprocess.run(
        ["podman", "run", "--rm", *cli_flags("podman", "run"), "--entrypoint", "python", IMAGE, "-c", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        return f"podman cannot run a container here: {probe.stderr.strip()[-200:]}"
    return None


@pytest.mark.e2e
@pytest.mark.image
def test_image_runs_as_non_root_without_compilers():
    """The final stage: uid 10001, rfau as the entrypoint, the CPU torch, no C compiler."""
    problem = podman_problem()
    if problem:
        pytest.skip(problem)
    from rfau.pipelines.container import cli_flags

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["podman", "run", "--rm", *cli_flags("podman", "run"), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    probe = "import os, torch; print(os.getuid(), torch.__version__)"
    who = run("--entrypoint", "sh", IMAGE, "-c", f"python -c '{probe}'; command -v gcc cc c++ || true")
    assert who.returncode == 0, who.stderr[-2000:]
    assert who.stdout.split() == ["10001", "2.13.0+cpu"], who.stdout
    helped = run(IMAGE)  # the default command: rfau --help
    assert helped.returncode == 0 and "pipeline" in helped.stdout, helped.stderr[-2000:]


COMPARED_AWAY = {"batch_id", "started_at", "finished_at", "recorded_at", "mlflow_run_id", "hash", "evidence"}


def ledger_record(cwd: Path, request_id: str) -> dict:
    r = run_rfau("audit", "show", request_id, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    shown = json.loads(r.stdout)
    assert shown["problems"] == []
    record = {k: v for k, v in shown["record"].items() if k not in COMPARED_AWAY}
    for attempt in record["attempts"]:
        attempt.pop("seconds")
    return record


@pytest.mark.e2e
@pytest.mark.image
def test_demo_pipeline_in_the_image_as_with_the_subprocess_runner(tmp_path):
    problem = podman_problem()
    if problem:
        pytest.skip(problem)
    salt = {"RFAU_AUDIT_SALT": "0f" * 16, "OMP_NUM_THREADS": "1"}  # one salt: comparable subject hashes
    host, box = tmp_path / "subprocess", tmp_path / "container"
    host.mkdir()
    box.mkdir()

    t0 = time.time()
    first = run_rfau("pipeline", "run", "--local", "--demo", "--json", cwd=host, timeout=900, **salt)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    seconds_host = time.time() - t0
    out_host = json.loads(first.stdout)
    rid = out_host["demo_request"]

    # the very same request in a fresh state, then the pipeline with every task in the image
    added = run_rfau("request", "add", str(host / "runs" / "requests" / f"{rid}.json"), cwd=box, **salt)
    assert added.returncode == 0, added.stderr[-2000:]
    t0 = time.time()
    second = run_rfau(
        "pipeline", "run", "--local", "--no-demo", "--runner", "container", "--image", IMAGE, "--json",
        cwd=box, timeout=1800, **salt,
    )  # fmt: skip
    seconds_box = time.time() - t0
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    out_box = json.loads(second.stdout)

    def run_logs(run, out: dict) -> str:  # the terminal's lines and the run's logs (task.log, kfp.log)
        return run.stdout + run.stderr + "".join(p.read_text() for p in Path(out["run_dir"]).rglob("*.log"))

    logs = run_logs(second, out_box)
    # kfp.local's DockerRunner ran each task in this image (the subprocess runner ran none there)
    assert logs.count(f"running in image {IMAGE}") >= 5, logs[-3000:]
    assert "running in image" not in run_logs(first, out_host)

    keys = ("model", "version", "champion", "gates_passed", "promoted", "ledger_seq", "request_ids")
    assert {k: out_box["result"][k] for k in keys} == {k: out_host["result"][k] for k in keys}
    assert out_box["result"]["champion"] == 2
    assert ledger_record(box, rid) == ledger_record(host, rid)
    verify = run_rfau("audit", "verify", cwd=box)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    print(f"demo pipeline: subprocess runner {seconds_host:.0f} s, in the image {seconds_box:.0f} s")
