"""Drivers of the deletion-batch pipeline: compile to YAML, run locally with kfp.local's
subprocess runner (the very same pipeline, in this environment), submit one run to a KFP
endpoint, or create a recurring run there (scheduled deletions)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import rfau.batch
from rfau.components.image import CPU_IMAGE, CUDA_IMAGE
from rfau.data.request_store import RequestState, RequestStore, default_store
from rfau.devices import check_image_ref, kfp_cron
from rfau.errors import RfauError, Terminated, UsageError
from rfau.io import claim_output_file, reuse_dir
from rfau.kfp_client import KfpApi, pipeline_spec
from rfau.params import BatchParams
from rfau.pipelines import container
from rfau.pipelines.deletion_batch import PIPELINE_NAME, GpuSpec, build_pipeline
from rfau.pipelines.schedules import SCHEDULE_NAME, ensure_schedule
from rfau.pipelines.task_logs import RUN_LOG, stage_lines
from rfau.records import BatchMeta, Registered, Skipped
from rfau.signals import sigterm_raises
from rfau.tracking.settings import TrackingSettings


def pipeline_arguments(p: BatchParams, local: bool) -> dict:
    """The pipeline's parameters: the batch parameters by their own names. On a cluster an empty
    store means the pods' own rfau-config (this machine's may be a port-forward); a local run gets
    this machine's store, dataset folder and base model folder made absolute."""
    arguments = p.model_dump(mode="json")
    if local:
        store = p.store or default_store()
        arguments["store"] = store if "://" in store else str(Path(store).resolve())
        if p.dataset != "digits" and "://" not in p.dataset:
            arguments["dataset"] = str(Path(p.dataset).resolve())
        if p.base_model_uri and "://" not in p.base_model_uri:
            arguments["base_model_uri"] = str(Path(p.base_model_uri).expanduser().resolve())
    return arguments


@contextlib.contextmanager
def task_environment(settings: TrackingSettings) -> Iterator[None]:
    """The tracking settings of this machine for kfp.local's task subprocesses (they inherit the
    environment), as the rfau-config ConfigMap gives them to the pods on a cluster; the tracking
    URI and the state folder (the ledger's mirror, the audit salt) made absolute, since the tasks
    need not run in this folder."""
    given = {
        "RFAU_TRACKING_URI": settings.uri(),
        "RFAU_MODEL_NAME": settings.model_name,
        "RFAU_STATE_DIR": str(Path(settings.state_dir).resolve()),
    }
    before = {k: os.environ.get(k) for k in given}
    os.environ.update(given)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


ROOT = "pipeline run"  # what a local run's pipeline root is marked as written by


def is_compiled_pipeline(path: Path) -> bool:
    """Whether ``path`` holds this pipeline as `rfau pipeline compile` writes it (KFP's header
    comment names it), so that compiling again may replace it."""
    try:
        with open(path, errors="replace") as f:
            head = [f.readline() for _ in range(3)]
    except OSError:
        return False
    return head[0].strip() == "# PIPELINE DEFINITION" and f"# Name: {PIPELINE_NAME}\n" in head


def is_pipeline_root(folder: Path) -> bool:
    """A pipeline root of local runs from before output folders were marked: nothing but run
    folders of this pipeline."""
    entries = list(folder.iterdir())
    return bool(entries) and all(p.is_dir() and p.name.startswith(f"{PIPELINE_NAME}-") for p in entries)


def compile_pipeline(out: str | Path, gpu: GpuSpec | None = None) -> Path:
    import tempfile

    from kfp import compiler

    # the images every task pulls on a cluster: a typo in RFAU_IMAGE fails here, not in each pod
    check_image_ref(CPU_IMAGE, "RFAU_IMAGE")
    check_image_ref(CUDA_IMAGE, "RFAU_CUDA_IMAGE")
    given = Path(out)
    out = claim_output_file(out, "pipeline compile", is_compiled_pipeline)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own beside it (kfp insists on a .yaml suffix), removed if compiling fails
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem[:40]}.", suffix=".tmp.yaml", dir=out.parent)
    os.close(fd)
    try:
        compiler.Compiler().compile(build_pipeline(gpu), tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return given


BATCH_FILE = "batch.json"  # rfau.batch.BATCH: the batch folder's record of its claims


def _pending_again(batch_dir: Path) -> list[str]:
    """The batch's requests that are pending again after a failed local run: the pipeline's exit
    task (components/cleanup.py) has released them already; abort() covers a run that died
    before the exit task could run, and releases nothing twice."""
    # rfau.batch loads the stage it is asked for (PEP 562): abort, and torch with its registry
    rfau.batch.abort(batch_dir, "the local pipeline run stopped before register")
    meta = BatchMeta.read(batch_dir / BATCH_FILE)
    reqs = RequestStore.from_uri(meta.store)
    return [rid for rid in meta.request_ids if reqs.get(rid).state is RequestState.PENDING]


def _stop_tasks(root: Path, started: float) -> str:
    """After a SIGTERM: stop the task processes (each releases its batch's requests) and put back
    whatever they left claimed -> what was released, for the error line."""
    import psutil

    tasks = psutil.Process().children(recursive=True)
    for t in tasks:
        with contextlib.suppress(psutil.Error):
            t.terminate()
    _, alive = psutil.wait_procs(tasks, timeout=30)
    for t in alive:
        with contextlib.suppress(psutil.Error):
            t.kill()
    batches = [b for b in root.rglob(BATCH_FILE) if b.stat().st_mtime >= started - 1]
    released = _pending_again(batches[-1].parent) if batches else []
    return f"requests released (pending again): {', '.join(released) or 'none'}"


RUNNERS = ("subprocess", "container")


def run_local(
    arguments: dict,
    pipeline_root: str | Path,
    settings: TrackingSettings | None = None,
    runner: str = "subprocess",
    image: str | None = None,
) -> tuple[Registered | Skipped, Path]:
    """Run the pipeline with kfp.local on the registry of ``settings`` (default: this machine's)
    -> the register stage's result (or the skip notice), and the folder every output went to.
    ``runner``: "subprocess" (no venv: the installed rfau) or "container" (every task in
    ``image`` through Docker's or podman's API: rfau.pipelines.container)."""
    from kfp import local

    if runner not in RUNNERS:
        raise UsageError(f"--runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    settings = settings or TrackingSettings.from_env()
    root = reuse_dir(pipeline_root, ROOT, is_pipeline_root).resolve()
    started = time.time()
    with task_environment(settings), stage_lines() as kfp_lines, contextlib.ExitStack() as stack:
        if runner == "container":
            image = image or CPU_IMAGE
            container.check_image(stack.enter_context(container.docker_api()), image)
            stack.enter_context(container.exit_codes_kept())
            task_runner = container.docker_runner(arguments, Path(settings.state_dir))
        else:
            image, task_runner = None, local.SubprocessRunner(use_venv=False)
        local.init(runner=task_runner, pipeline_root=str(root), raise_on_error=False)
        try:
            with sigterm_raises("the local pipeline run"):
                build_pipeline(retries=0, image=image)(**arguments)
        except Terminated as e:
            raise Terminated(f"{e}; {_stop_tasks(root, started)}") from None
    runs = sorted(
        (p for p in root.iterdir() if p.is_dir() and p.stat().st_mtime >= started - 1),
        key=lambda p: p.stat().st_mtime,
    )
    if not runs:
        last = " ".join(kfp_lines.getvalue().split())[-300:]  # kfp.local's last words, on the one line
        raise RfauError(f"the local pipeline run left no outputs in {root}" + (f": {last}" if last else ""))
    run_dir = runs[-1]
    (run_dir / RUN_LOG).write_text(kfp_lines.getvalue())
    found = sorted(run_dir.rglob("registered.json"))
    if not found:
        batches = sorted(run_dir.rglob(BATCH_FILE))
        released = _pending_again(batches[0].parent) if batches else []
        raise RfauError(
            f"the local pipeline run failed before the register stage (task outputs in {run_dir})"
            + (f"; requests {', '.join(released)} are pending again" if released else "")
        )
    return Registered.read_or_skipped(found[0]), run_dir


# a Kubernetes namespace name (RFC 1123 label), e.g. a Kubeflow Profile namespace
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_namespace(namespace: str | None) -> str | None:
    if namespace is not None and not NAMESPACE_NAME.fullmatch(namespace):
        raise UsageError(
            f"--namespace {namespace!r} is not a Kubernetes namespace name "
            "(lower-case letters, digits and '-', at most 63 characters)"
        )
    return namespace


def cluster_api(endpoint: str, token: str | None, namespace: str | None = None):
    """The KFP endpoint, its server's version checked (rfau.kfp_client.MIN_KFP) -> (api, version)."""
    api = KfpApi(endpoint, token, check_namespace(namespace))
    return api, api.server_version()


def _package_spec(package: str | Path | None) -> dict:
    """The pipeline as the API takes it: ``package`` (a compiled YAML), else compiled now."""
    import tempfile

    if package:
        return pipeline_spec(package)
    with tempfile.TemporaryDirectory() as d:
        return pipeline_spec(compile_pipeline(Path(d) / "pipeline.yaml"))


def submit(
    endpoint: str,
    arguments: dict,
    experiment: str = "rfau",
    token: str | None = None,
    package: str | Path | None = None,
    service_account: str | None = None,
    namespace: str | None = None,
) -> dict:
    """One run of the pipeline on a KFP endpoint, in ``namespace`` when given (multi-user KFP:
    the Profile namespace holding rfau's manifests; else the endpoint's default)."""
    check_namespace(namespace)
    spec = _package_spec(package)  # the images named and the YAML parsed before any connection
    api, version = cluster_api(endpoint, token, namespace)
    run_id = api.create_run(
        f"{PIPELINE_NAME}-{int(time.time())}", api.experiment_id(experiment), spec, arguments, service_account
    )
    return {"run_id": run_id, "endpoint": endpoint, "namespace": namespace, "kfp_version": version}


def schedule(
    endpoint: str,
    cron: str,
    arguments: dict,
    experiment: str = "rfau",
    token: str | None = None,
    package: str | Path | None = None,
    service_account: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
) -> dict:
    """The recurring run ``name``: the pipeline every ``cron`` (5 or KFP's 6 fields, or a
    descriptor), one at a time (max_concurrency 1: two batches never claim requests at once), no
    catch-up. Unique by name: the same settings keep it, new ones replace it (pipelines/schedules.py)."""
    cron = kfp_cron(cron)  # every field in range, before any connection
    check_namespace(namespace)
    spec = _package_spec(package)
    api, version = cluster_api(endpoint, token, namespace)
    res = ensure_schedule(api, name or SCHEDULE_NAME, cron, arguments, spec, experiment, service_account)
    return {**res, "endpoint": endpoint, "namespace": namespace, "kfp_version": version}
