"""Running the pipeline's tasks in the component image on this machine: kfp.local's DockerRunner
against Docker or podman's Docker-compatible API (``podman system service``).

The container settings live here and nowhere else; the Makefile reads them as command-line flags
(``python3 pipelines/container.py flags run|build``; this file needs only the standard library at
import time so that works before any set-up):

- ``RFAU_CONTAINER_RUNTIME`` (default ``runc``): the OCI runtime. Some sandboxes (and podman's default
  crun there) cannot start a container with crun; runc is Docker's default anyway. Empty: the engine's
  default.
- ``RFAU_CONTAINER_ULIMITS`` (default ``nofile=1024:1024 nproc=1024:1024``): the same sandboxes refuse
  the engine's default limits. Empty: the engine's defaults.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

RUNTIME = "runc"
ULIMITS = "nofile=1024:1024 nproc=1024:1024"


def runtime() -> str:
    return os.environ.get("RFAU_CONTAINER_RUNTIME", RUNTIME).strip()


def ulimits() -> list[tuple[str, int, int]]:
    """(name, soft, hard) per limit of ``RFAU_CONTAINER_ULIMITS``."""
    out = []
    for item in os.environ.get("RFAU_CONTAINER_ULIMITS", ULIMITS).split():
        name, _, values = item.partition("=")
        soft, _, hard = values.partition(":")
        try:
            out.append((name, int(soft), int(hard or soft)))
        except ValueError:
            from rfau.errors import UsageError

            raise UsageError(
                f"RFAU_CONTAINER_ULIMITS: {item!r} is not NAME=SOFT:HARD (e.g. nofile=1024:1024)"
            ) from None
    return out


def cli_flags(engine: str, action: str) -> list[str]:
    """The settings as `podman|docker run|build` flags (docker build has no --runtime)."""
    flags = [] if not runtime() or (engine == "docker" and action == "build") else ["--runtime", runtime()]
    for name, soft, hard in ulimits():
        flags += ["--ulimit", f"{name}={soft}:{hard}"]
    return flags


# --- the engine --------------------------------------------------------------------------------------


def _answers(docker_host: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=docker_host, timeout=10)
        try:
            client.ping()
        finally:
            client.close()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def docker_api() -> Iterator[str]:
    """A Docker-compatible API for the docker SDK, as DOCKER_HOST, for the duration of the block:
    $DOCKER_HOST or Docker's socket where one answers; else podman's API served from a socket of
    this process's own (``podman system service``), stopped afterwards."""
    from rfau.errors import RfauError

    given = os.environ.get("DOCKER_HOST")
    candidates = [given] if given else ["unix:///var/run/docker.sock"]
    for host in candidates:
        if host and (not host.startswith("unix://") or Path(host[7:]).exists()) and _answers(host):
            yield host
            return
    if given:
        raise RfauError(f"DOCKER_HOST={given} does not answer as a Docker API")
    podman = shutil.which("podman")
    if podman is None:
        raise RfauError(
            "no container engine: Docker's socket does not answer and podman is not installed "
            "(apt-get install podman runc, or set DOCKER_HOST)"
        )
    with tempfile.TemporaryDirectory(prefix="rfau-podman-") as d:
        sock = Path(d) / "podman.sock"
        host = f"unix://{sock}"
        log = Path(d) / "service.log"  # a file, not a pipe: a long run's log never blocks the service
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [podman, "system", "service", "--time=0", host],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            deadline = time.monotonic() + 30
            while not (sock.exists() and _answers(host)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = log.read_text(errors="replace").strip()
                    raise RfauError(f"`podman system service` did not start: {said[-300:] or 'timed out'}")
                time.sleep(0.2)
            with _environ("DOCKER_HOST", host):
                yield host
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def _environ(key: str, value: str) -> Iterator[None]:
    before = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def check_image(docker_host: str, image: str) -> None:
    """The image must be in the engine's store: kfp.local would otherwise try to pull it."""
    import docker

    from rfau.errors import RfauError

    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise RfauError(
            f"image {image} is not in the container engine's store: build it with `make image`"
        ) from None
    finally:
        client.close()


# --- kfp.local's runner ------------------------------------------------------------------------------

# what the tasks read from the environment, as the pods get it from rfau-config and the secrets
PASSED_ENV_PREFIXES = ("RFAU_", "MLFLOW_", "AWS_")
# and the thread counts: the same count gives the same floating-point sums as a run on the host
PASSED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def host_paths(arguments: dict, state_dir: Path) -> list[Path]:
    """The host folders a local run's tasks read and write besides the pipeline root (kfp mounts
    that): the state folder (local registry, ledger mirror, default request store), and the
    pipeline arguments that are local paths (request store, dataset, base model). Each is mounted at
    the same path, so every path in the run's records is the same inside and out."""
    found = [state_dir.resolve()]
    for key in ("store", "dataset", "base_model_uri"):
        value = arguments.get(key)
        # a path that is not there is not mounted: the task then names it as missing
        if isinstance(value, str) and value.startswith("/") and "://" not in value and Path(value).exists():
            p = Path(value)
            found.append(p if p.is_dir() else p.parent)
    return _outermost(found)


def _outermost(paths: list[Path]) -> list[Path]:
    """The folders without an ancestor in the list (a mount of a folder covers its subfolders)."""
    out: list[Path] = []
    for p in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return out


def docker_runner(arguments: dict, state_dir: Path):
    """kfp.local's DockerRunner for this machine: the sandbox's runtime and limits, the host's network
    (a tracking server on loopback is reachable), the host folders of the run mounted at their own
    paths, the caller's uid (files written to those folders stay the caller's; the image's own user
    is what a cluster runs), and no image entrypoint (kfp's task command is the whole command)."""
    import docker
    from kfp import local

    limits = [docker.types.Ulimit(name=n, soft=s, hard=h) for n, s, h in ulimits()]
    state_dir.mkdir(parents=True, exist_ok=True)
    mounts = [
        docker.types.Mount(target=str(p), source=str(p), type="bind")
        for p in host_paths(arguments, state_dir)
    ]
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES) or k in PASSED_ENV}
    env["HOME"] = "/tmp"  # the caller's uid has no home in the image
    settings = {
        "ulimits": limits,
        "mounts": mounts,
        "network_mode": "host",
        "user": f"{os.getuid()}:{os.getgid()}",
        "entrypoint": [""],
        "environment": env,
    }
    if runtime():
        settings["runtime"] = runtime()
    return local.DockerRunner(**settings)


def _run_task_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """kfp.local's run_docker_container without auto-remove: kfp 2.17.3 removes the container as it
    exits and reports a task whose container is gone before its exit code is read as succeeded, and
    podman removes it that fast; here the exit code is read first, then the container removed."""
    print(f"running in image {image}")
    container = client.containers.run(
        image=image, command=command, detach=True, stdout=True, stderr=True, volumes=volumes, **run_args
    )
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        # a run stopped meanwhile (SIGTERM): the task gets its own SIGTERM first, to release its claims
        with contextlib.suppress(Exception):
            container.stop(timeout=20)
        with contextlib.suppress(Exception):
            container.remove(force=True)


@contextlib.contextmanager
def exit_codes_kept() -> Iterator[None]:
    """kfp.local's Docker task handler runs each task with :func:`_run_task_container`."""
    from kfp.local import docker_task_handler

    before = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = _run_task_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = before


if __name__ == "__main__":  # python3 pipelines/container.py flags run|build [ENGINE]
    if len(sys.argv) < 3 or sys.argv[1] != "flags" or sys.argv[2] not in ("run", "build"):
        sys.exit("usage: container.py flags run|build [podman|docker]")
    print(" ".join(cli_flags(sys.argv[3] if len(sys.argv) > 3 else "podman", sys.argv[2])))
