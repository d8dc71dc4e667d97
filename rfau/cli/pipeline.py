"""`rfau pipeline ...`: The Kubeflow pipeline: compile, run locally, submit, schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.table import Table

import rfau.batch  # torch and the stages load when `pipeline run` checks a batch (PEP 562)
from rfau.cli.common import (
    JsonOpt,
    ParamsOpt,
    RfauTyper,
    SetOpt,
    emit,
    out,
    results_only,
    store_uri,
    tracking_settings,
)
from rfau.cli.render import exit_if_gates_failed, exit_if_overdue, print_registered
from rfau.components.image import CPU_IMAGE
from rfau.data.demo import queue_demo_request
from rfau.data.request_store import RequestStore
from rfau.errors import UsageError
from rfau.io import claim_output, claim_output_file
from rfau.params import load_params
from rfau.pipelines import container
from rfau.pipelines.deletion_batch import GpuSpec
from rfau.pipelines.run import (
    ROOT,
    RUNNERS,
    cluster_api,
    compile_pipeline,
    is_compiled_pipeline,
    is_pipeline_root,
    pipeline_arguments,
    run_local,
    schedule,
    submit,
)
from rfau.pipelines.schedules import SCHEDULE_NAME, delete_schedule, list_schedules, set_schedule_enabled
from rfau.records import Registered

pipeline_app = RfauTyper(
    help="The Kubeflow pipeline: compile, run locally, submit, schedule.", no_args_is_help=True
)


# --- pipeline ---------------------------------------------------------------------------------------


@pipeline_app.command("compile")
def pipeline_compile(
    out_path: Annotated[Path, typer.Option("--out", "--output", "-o", help="Pipeline YAML to write.")] = Path(
        "pipeline.yaml"
    ),
    accelerator: Annotated[str, typer.Option(help="GPU resource of the unlearn task.")] = "nvidia.com/gpu",
    gpus: Annotated[int, typer.Option(help="GPUs for the unlearn task.")] = 1,
    node_selector: Annotated[
        str, typer.Option(help="Node label KEY=VALUE for the unlearn task.")
    ] = "nvidia.com/gpu.present=true",
    toleration: Annotated[
        str, typer.Option(help="Taint key the unlearn task tolerates (NoSchedule).")
    ] = "nvidia.com/gpu",
    as_json: JsonOpt = False,
) -> None:
    """Compile the pipeline to KFP v2 YAML (upload it in the KFP UI or `rfau pipeline submit --package`)."""
    claim_output_file(out_path, "pipeline compile", is_compiled_pipeline)
    key, sep, value = node_selector.partition("=")
    if not sep or not key:
        raise UsageError(f"--node-selector expects KEY=VALUE, got {node_selector!r}")
    if gpus < 1:
        raise UsageError(f"--gpus must be at least 1, got {gpus}")
    gpu = GpuSpec(
        accelerator=accelerator,
        count=gpus,
        node_selector_key=key,
        node_selector_value=value,
        toleration_key=toleration,
    )
    path = compile_pipeline(out_path, gpu)
    emit(as_json, {"pipeline": path}, lambda: out.print(f"pipeline written to {path}"))


@pipeline_app.command("run")
def pipeline_run(
    local: Annotated[
        bool, typer.Option("--local", help="Run with kfp.local on this machine (see --runner).")
    ] = False,
    runner: Annotated[
        str,
        typer.Option(
            "--runner",
            help="subprocess: each task in this environment; container: each task in the component "
            "image (`make image`) through Docker's or podman's API.",
        ),
    ] = "subprocess",
    image: Annotated[
        str | None,
        typer.Option(help="The image of --runner container (default: $RFAU_IMAGE or the CPU image's tag)."),
    ] = None,
    root: Annotated[Path, typer.Option(help="Pipeline root: every task's outputs.")] = Path("runs/pipeline"),
    params: ParamsOpt = None,
    set_: SetOpt = None,
    demo: Annotated[
        bool | None,
        typer.Option(
            "--demo/--no-demo",
            help="First queue a demo request (5% of the remaining training samples). Default: only "
            "on the embedded digits when the store has never seen a request.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the deletion-batch pipeline; on a cluster use `submit` or `schedule`.

    Exit code 1 when the run completed but a gate failed (its requests are pending again)."""
    if not local:
        raise UsageError(
            "only --local runs here; on a cluster use `rfau pipeline submit` or `rfau pipeline schedule`"
        )
    if runner not in RUNNERS:
        raise UsageError(f"--runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    if image is not None and runner != "container":
        raise UsageError("--image applies to --runner container only")
    claim_output(root, ROOT, is_pipeline_root)  # before anything is queued
    p = load_params(params, set_)
    # the tasks run here: settings that would fail the unlearn task fail now, before anything is queued
    rfau.batch.check_before_claiming(p, tracking_settings(None, None), device_here=True)
    if runner == "container":  # an engine that answers and the image in its store, before anything is queued
        with container.docker_api() as host:
            container.check_image(host, image or CPU_IMAGE)
    if demo is None:  # a fresh checkout: show the whole flow on the embedded data
        demo = p.dataset == "digits" and not RequestStore.from_uri(store_uri(p.store)).list()
    demo_request = queue_demo_request(p, store_uri(p.store)) if demo else None
    if demo_request:
        out.print(f"queued demo request {demo_request}")
    res, run_dir = run_local(pipeline_arguments(p, local=True), root, runner=runner, image=image)
    emit(
        as_json,
        {"demo_request": demo_request, "result": res, "run_dir": run_dir},
        lambda: _print_local_run(res, run_dir),
    )
    exit_if_overdue(store_uri(p.store), p.deadline_days)
    exit_if_gates_failed(res)


def _print_local_run(res, run_dir: Path) -> None:
    report = run_dir / "evaluate" / "report"
    if isinstance(res, Registered) and report.is_file():
        out.print(Markdown(report.read_text()))
    print_registered(res)
    out.print(f"task outputs in {run_dir}")


EndpointOpt = Annotated[
    str,
    typer.Option(
        "--endpoint",
        envvar="KFP_ENDPOINT",
        help="KFP API endpoint, e.g. http://localhost:8080 ($KFP_ENDPOINT).",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="KFP_TOKEN", help="Bearer token for the endpoint ($KFP_TOKEN)."),
]
PackageOpt = Annotated[
    Path | None, typer.Option("--package", help="A compiled pipeline YAML (default: compile now).")
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option(help="Kubernetes namespace of the run (multi-user KFP: your Profile namespace)."),
]
SaOpt = Annotated[
    str | None, typer.Option("--service-account", help="Kubernetes service account of the run's pods.")
]


@pipeline_app.command("submit")
def pipeline_submit(
    endpoint: EndpointOpt,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    token: TokenOpt = None,
    package: PackageOpt = None,
    service_account: SaOpt = "rfau-pipeline",
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "rfau",
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start one pipeline run on a KFP endpoint."""
    res = submit(
        endpoint,
        pipeline_arguments(load_params(params, set_), local=False),
        experiment,
        token,
        package,
        service_account,
        namespace=namespace,
    )
    emit(as_json, res, lambda: out.print_json(data=res))


schedule_app = RfauTyper(
    help="Scheduled deletions on a KFP endpoint: recurring runs of the pipeline, unique by name."
)
pipeline_app.add_typer(schedule_app, name="schedule")
ScheduleNameOpt = Annotated[
    str, typer.Option("--name", help="The schedule's name (one recurring run of that name at most).")
]


@schedule_app.callback(invoke_without_command=True)
def pipeline_schedule(
    ctx: typer.Context,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", envvar="KFP_ENDPOINT", help="KFP API endpoint ($KFP_ENDPOINT)."),
    ] = None,
    cron: Annotated[
        str | None,
        typer.Option(
            help="When to run: cron fields ('0 2 * * *': 02:00 daily; names such as MON-FRI) or a "
            "descriptor (@daily, @every 6h)."
        ),
    ] = None,
    name: ScheduleNameOpt = SCHEDULE_NAME,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    token: TokenOpt = None,
    package: PackageOpt = None,
    service_account: SaOpt = "rfau-pipeline",
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "rfau",
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or update the recurring run NAME: one deletion batch per schedule tick, never two at
    once. Run again with the same settings it keeps the schedule; with new ones it replaces it
    (never a second schedule of one name). Subcommands: list, pause, resume, delete."""
    if ctx.invoked_subcommand:
        return
    if not endpoint:
        raise UsageError("--endpoint (or $KFP_ENDPOINT) is required: the KFP API to schedule on")
    if not cron:
        raise UsageError("--cron is required, e.g. --cron '0 2 * * *' or --cron @daily")
    quiet = bool(ctx.find_root().params.get("quiet"))
    with results_only(quiet=quiet, as_json=as_json):  # a group's callback is no _Command: same rules
        res = schedule(
            endpoint,
            cron,
            pipeline_arguments(load_params(params, set_), local=False),
            experiment,
            token,
            package,
            service_account,
            namespace=namespace,
            name=name,
        )
        emit(
            as_json,
            res,
            lambda: out.print(
                f"schedule {res['name']} {res['action']}: {res['cron']} "
                f"(recurring run {res['recurring_run_id']}, KFP {res['kfp_version']})"
            ),
        )


def _schedules_api(endpoint: str, token: str | None, namespace: str | None):
    return cluster_api(endpoint, token, namespace)[0]


@schedule_app.command("list")
def schedule_list(
    endpoint: EndpointOpt, token: TokenOpt = None, namespace: NamespaceOpt = None, as_json: JsonOpt = False
) -> None:
    """The recurring runs of the endpoint (its namespace): name, cron, enabled."""
    rows = list_schedules(_schedules_api(endpoint, token, namespace))
    emit(as_json, rows, lambda: _print_schedules(rows))


def _print_schedules(rows: list[dict]) -> None:
    table = Table("name", "cron", "enabled", "recurring run", "created")
    for r in rows:
        table.add_row(
            r["name"],
            r["cron"] or "",
            "yes" if r["enabled"] else "paused",
            r["recurring_run_id"],
            r["created_at"] or "",
        )
    out.print(table if rows else "no schedules")


def _set_enabled(endpoint, token, namespace, name, enabled: bool, as_json: bool) -> None:
    rows = set_schedule_enabled(_schedules_api(endpoint, token, namespace), name, enabled)
    emit(as_json, rows, lambda: out.print(f"schedule {name} {'resumed' if enabled else 'paused'}"))


@schedule_app.command("pause")
def schedule_pause(
    endpoint: EndpointOpt,
    name: ScheduleNameOpt = SCHEDULE_NAME,
    token: TokenOpt = None,
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pause the schedule NAME (no runs until `resume`; missed ticks are not caught up)."""
    _set_enabled(endpoint, token, namespace, name, False, as_json)


@schedule_app.command("resume")
def schedule_resume(
    endpoint: EndpointOpt,
    name: ScheduleNameOpt = SCHEDULE_NAME,
    token: TokenOpt = None,
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resume the paused schedule NAME."""
    _set_enabled(endpoint, token, namespace, name, True, as_json)


@schedule_app.command("delete")
def schedule_delete(
    endpoint: EndpointOpt,
    name: ScheduleNameOpt = SCHEDULE_NAME,
    token: TokenOpt = None,
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete the schedule NAME (runs already started go on)."""
    rows = delete_schedule(_schedules_api(endpoint, token, namespace), name)
    emit(as_json, rows, lambda: out.print(f"schedule {name} deleted"))
