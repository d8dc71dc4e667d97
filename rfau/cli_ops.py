"""Operations commands: deletion requests, batches, the KFP pipeline and the audit ledger.
Thin drivers over rfau.data.request_store, rfau.batch, rfau.pipelines and rfau.audit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.table import Table

from rfau.cli import _fail, _parse_config, err, out
from rfau.data.split import HOLDOUT_FRACTION
from rfau.errors import RfauError, validation_problems
from rfau.tracking.gates import Gates

request_app = typer.Typer(
    help="Deletion requests: add them, list them with their states.", no_args_is_help=True
)
batch_app = typer.Typer(
    help="One deletion batch: all pending requests -> one new model version.", no_args_is_help=True
)
pipeline_app = typer.Typer(
    help="The Kubeflow pipeline: compile, run locally, submit, schedule.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="The deletion ledger: verify it, show the proof for a request.", no_args_is_help=True
)


class BatchParams(BaseModel):
    """The knobs of a batch, as in params.yaml (the pipeline's parameters)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = "digits"
    store: str | None = None  # request store: a folder or s3://bucket/prefix (default: $RFAU_REQUEST_STORE)
    method: str = "rfau"
    method_config: dict = Field(default_factory=dict)
    gates: Gates = Field(default_factory=Gates)
    train: dict = Field(default_factory=dict)  # the bootstrap original's recipe (first batch only)
    holdout_fraction: float = HOLDOUT_FRACTION


ParamsOpt = Annotated[
    Path | None, typer.Option("--params", "-p", help="YAML file of batch parameters (see params.yaml).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Parameter KEY=VALUE (JSON values), e.g. --set method_config='{\"rank\": 8}'."
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Request store: a folder or s3://bucket/prefix "
        "(default: $RFAU_REQUEST_STORE, else .rfau/store).",
    ),
]


def check_method(p: BatchParams) -> None:
    """Fail before a batch claims anything: an unknown method or invalid settings."""
    from rfau.methods import get_method

    cls = get_method(p.method).config
    if cls is not None:
        try:
            cls(**p.method_config)
        except ValidationError as e:
            raise RfauError(f"invalid settings for method {p.method!r}: {validation_problems(e)}") from None


def load_params(path: Path | None, sets: list[str] | None = None, **overrides) -> BatchParams:
    raw: dict = {}
    if path:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise RfauError(f"cannot read parameters {path}: {e}") from None
        if not isinstance(raw, dict):
            raise RfauError(f"{path}: parameters must be a mapping")
    raw.update(_parse_config(None, sets))
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        params = BatchParams(**raw)
    except ValidationError as e:
        raise RfauError(
            f"invalid batch parameters{f' in {path}' if path else ''}: {validation_problems(e)}"
        ) from None
    check_method(params)
    return params


def _settings():
    from rfau.tracking.settings import TrackingSettings

    return TrackingSettings.from_env()


def _store(store: str | None) -> str:
    from rfau.batch import default_store

    return store or default_store()


# --- requests ---------------------------------------------------------------------------------------


@request_app.command("add")
def request_add(
    paths: Annotated[list[Path], typer.Argument(help="Request JSON files or folders of them.")],
    store: StoreOpt = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Also check the ids and classes against this dataset (default: digits); "
            "'none' checks the form only."
        ),
    ] = "digits",
) -> None:
    """Validate requests and queue them as pending (all or nothing)."""
    from rfau.data.datasets import load_dataset
    from rfau.data.request_store import RequestStore

    try:
        ds = None if dataset in (None, "none") else load_dataset(dataset)
        added = RequestStore.from_uri(_store(store)).add(list(paths), ds)
    except RfauError as e:
        _fail(e)
    out.print(f"added {len(added)} pending request(s): {', '.join(added)}")


@request_app.command("list")
def request_list(
    store: StoreOpt = None,
    state: Annotated[
        str | None, typer.Option(help="Only this state: pending, in-progress, fulfilled or rejected.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Requests with their states (and why: the batch, the model version, or the rejection reason)."""
    from rfau.data.request_store import RequestState, RequestStore

    try:
        want = RequestState(state) if state else None
    except ValueError:
        _fail(RfauError(f"--state must be one of {', '.join(s.value for s in RequestState)}, got {state!r}"))
    try:
        rows = RequestStore.from_uri(_store(store)).list(want)
    except RfauError as e:
        _fail(e)
    if as_json:
        out.print_json(
            data=[
                {
                    "request_id": r.request_id,
                    "state": r.state.value,
                    "updated_at": r.updated_at,
                    "batch_id": r.batch_id,
                    "detail": r.detail,
                }
                for r in rows
            ]
        )
        return
    t = Table("request", "state", "updated", "batch", "detail")
    for r in rows:
        t.add_row(r.request_id, r.state.value, r.updated_at[:19], r.batch_id or "-", r.detail)
    out.print(t)


# --- batch stages (what dvc.yaml calls) ---------------------------------------------------------------


@batch_app.command("split")
def batch_split(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Batch folder to write.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """data-split: claim the pending requests -> batch folder (requests/, split/, base/, batch.json)."""
    from rfau.batch import data_split

    try:
        p = load_params(params, set_)
        meta = data_split(out_dir, p.dataset, p.store, _settings(), p.holdout_fraction, p.train)
    except RfauError as e:
        _fail(e)
    _print_split(meta)


def _print_split(meta: dict) -> None:
    for r in meta["rejected"]:
        err.print(f"[yellow]rejected {r['request_id']}:[/] {r['reason']}")
    if meta["empty"]:
        out.print(
            f"batch {meta['batch_id']}: nothing to forget "
            f"({'no pending requests' if not meta['request_ids'] else 'already forgotten'})"
        )
    else:
        out.print(
            f"batch {meta['batch_id']}: requests {', '.join(meta['request_ids'])}; forget set "
            f"{meta['forget_count']} samples (md5 {meta['forget_md5']}); "
            f"base version {meta['base']['version']}"
        )


@batch_app.command("unlearn")
def batch_unlearn(
    batch: Annotated[Path, typer.Option(help="Batch folder from `rfau batch split`.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """unlearn: forget the batch's forget set from its base (the champion)."""
    from rfau.batch import unlearn

    try:
        p = load_params(params, set_)
        info = unlearn(batch, out_dir, p.method, p.method_config)
    except RfauError as e:
        _fail(e)
    out.print(
        f"skipped: {info['reason']}"
        if info.get("skipped")
        else f"{info['method']}: {info['seconds']:.1f} s, {info['trainable_params']:,} trainable parameters"
    )


@batch_app.command("evaluate")
def batch_evaluate(
    batch: Annotated[Path, typer.Option(help="Batch folder.")],
    model: Annotated[Path, typer.Option(help="Unlearned model folder.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Evaluation folder to write.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """evaluate: new model vs champion, gate verdicts, plots, report."""
    from rfau.batch import evaluate

    try:
        p = load_params(params, set_)
        flat = evaluate(batch, model, out_dir, p.gates)
    except RfauError as e:
        _fail(e)
    out.print(flat)


@batch_app.command("register")
def batch_register(
    batch: Annotated[Path, typer.Option(help="Batch folder.")],
    model: Annotated[Path, typer.Option(help="Unlearned model folder.")],
    evaluation: Annotated[Path, typer.Option(help="Evaluation folder.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for registered.json.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """register: new registry version (champion only if gates pass), ledger record, request states."""
    from rfau.batch import register

    try:
        p = load_params(params, set_)
        res = register(batch, model, evaluation, out_dir, _settings(), p.gates, p.store)
    except RfauError as e:
        _fail(e)
    _print_registered(res)


def _print_registered(res: dict) -> None:
    if res.get("skipped"):
        out.print(f"nothing registered: {res['reason']}")
        return
    verdict = (
        "gates passed: promoted to champion; requests fulfilled"
        if res["gates_passed"]
        else "a gate failed: champion unchanged; requests back to pending"
    )
    out.print(
        f"{res['model']} version {res['version']} ({verdict}); champion is version {res['champion']}; "
        f"ledger record {res['ledger_seq']}"
    )


@batch_app.command("run")
def batch_run(
    workdir: Annotated[Path, typer.Option("--workdir", "-w", help="Where the stages write.")] = Path(
        "runs/batch"
    ),
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """All four stages in this process (what one scheduled pipeline run does)."""
    from rfau.batch import run_batch

    try:
        p = load_params(params, set_)
        res = run_batch(
            workdir,
            p.dataset,
            p.store,
            _settings(),
            p.method,
            p.method_config,
            p.gates,
            p.train,
            p.holdout_fraction,
        )
    except RfauError as e:
        _fail(e)
    for r in res["rejected"]:
        err.print(f"[yellow]rejected {r['request_id']}:[/] {r['reason']}")
    if res["skipped"]:
        out.print(f"batch {res['batch_id']}: nothing to do")
    else:
        _print_registered(res)


# --- pipeline ---------------------------------------------------------------------------------------


def _pipeline_args(p: BatchParams, local: bool) -> dict:
    """The pipeline's parameters. A local run gets this machine's store and tracking URI, made
    absolute (the tasks run as subprocesses in other folders)."""
    from rfau.tracking.settings import TrackingSettings

    settings = TrackingSettings.from_env()
    # on a cluster, empty URIs mean the pods' own rfau-config (this machine's may be a port-forward)
    store, tracking = p.store or "", ""
    if local:
        store = _store(p.store)
        if "://" not in store:
            store = str(Path(store).resolve())
        tracking = settings.uri()
    dataset = p.dataset
    if local and dataset != "digits" and "://" not in dataset:
        dataset = str(Path(dataset).resolve())
    return {
        "dataset_uri": dataset,
        "requests_uri": store,
        "method": p.method,
        "method_config": p.method_config,
        "model_name": settings.model_name,
        "tracking_uri": tracking,
        "gates": p.gates.model_dump(),
        "train_config": p.train,
        "holdout_fraction": p.holdout_fraction,
    }


@pipeline_app.command("compile")
def pipeline_compile(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Pipeline YAML to write.")] = Path(
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
) -> None:
    """Compile the pipeline to KFP v2 YAML (upload it in the KFP UI or `rfau pipeline submit --package`)."""
    from rfau.pipelines.deletion_batch import GpuSpec
    from rfau.pipelines.run import compile_pipeline

    key, sep, value = node_selector.partition("=")
    if not sep or not key:
        _fail(RfauError(f"--node-selector expects KEY=VALUE, got {node_selector!r}"))
    if gpus < 1:
        _fail(RfauError(f"--gpus must be at least 1, got {gpus}"))
    gpu = GpuSpec(
        accelerator=accelerator,
        count=gpus,
        node_selector_key=key,
        node_selector_value=value,
        toleration_key=toleration,
    )
    out.print(f"pipeline written to {compile_pipeline(out_path, gpu)}")


def _demo_request(p: BatchParams, store: str) -> str:
    """Queue a demo request: 5% of the training samples not forgotten yet, drawn at random."""
    from datetime import UTC, datetime

    from rfau.batch import requested_samples
    from rfau.data.datasets import load_dataset
    from rfau.data.request_store import RequestState, RequestStore
    from rfau.job import demo_request

    ds = load_dataset(p.dataset)
    reqs = RequestStore.from_uri(store)
    gone = set(requested_samples(reqs, ds, set(RequestState) - {RequestState.REJECTED})[0])
    rid = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    path = demo_request(
        ds,
        "random",
        Path("runs") / "requests",
        seed=rid,
        fraction=0.05,
        exclude=gone,
        request_id=rid,
        subject=f"user-{rid}",
        holdout_fraction=p.holdout_fraction,
    )
    reqs.add([path], ds)
    return rid


@pipeline_app.command("run")
def pipeline_run(
    local: Annotated[
        bool, typer.Option("--local", help="Run with kfp.local's subprocess runner in this environment.")
    ] = False,
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
) -> None:
    """Run the deletion-batch pipeline; on a cluster use `submit` or `schedule`."""
    from rfau.data.request_store import RequestStore
    from rfau.pipelines.run import run_local

    if not local:
        _fail(
            RfauError(
                "only --local runs here; on a cluster use `rfau pipeline submit` or `rfau pipeline schedule`"
            )
        )
    try:
        p = load_params(params, set_)
        if demo is None:  # a fresh checkout: show the whole flow on the embedded data
            demo = p.dataset == "digits" and not RequestStore.from_uri(_store(p.store)).list()
        if demo:
            out.print(f"queued demo request {_demo_request(p, _store(p.store))}")
        res = run_local(_pipeline_args(p, local=True), root)
    except RfauError as e:
        _fail(e)
    report = Path(res["run_dir"]) / "evaluate" / "report"
    if not res.get("skipped") and report.is_file():
        from rich.markdown import Markdown

        out.print(Markdown(report.read_text()))
    _print_registered(res)
    out.print(f"task outputs in {res['run_dir']}")


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
) -> None:
    """Start one pipeline run on a KFP endpoint."""
    from rfau.pipelines.run import submit

    try:
        res = submit(
            endpoint,
            _pipeline_args(load_params(params, set_), local=False),
            experiment,
            token,
            package,
            service_account,
        )
    except RfauError as e:
        _fail(e)
    out.print_json(data=res)


@pipeline_app.command("schedule")
def pipeline_schedule(
    endpoint: EndpointOpt,
    cron: Annotated[str, typer.Option(help="When to run, cron syntax, e.g. '0 2 * * *' (02:00 daily).")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
    token: TokenOpt = None,
    package: PackageOpt = None,
    service_account: SaOpt = "rfau-pipeline",
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "rfau",
) -> None:
    """Create a recurring run: one deletion batch per schedule tick, never two at once."""
    from rfau.pipelines.run import schedule

    try:
        res = schedule(
            endpoint,
            cron,
            _pipeline_args(load_params(params, set_), local=False),
            experiment,
            token,
            package,
            service_account,
        )
    except RfauError as e:
        _fail(e)
    out.print_json(data=res)


# --- audit ------------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    store: StoreOpt = None,
    weights: Annotated[
        bool, typer.Option(help="Also download every version the ledger names and hash its weights.")
    ] = True,
) -> None:
    """Check the ledger's chain, its copies, the registry's anchors and the versions' weights."""
    from rfau.audit.trail import AuditTrail

    try:
        trail = AuditTrail.open(_store(store), _settings())
        problems = trail.verify(check_weights=weights)
        n = len(trail.records()) if not problems else None
    except RfauError as e:
        _fail(e)
    if problems:
        for p in problems:
            err.print(f"[bold red]FAIL[/] {p}")
        raise typer.Exit(code=1)
    out.print(
        f"[green]ledger intact[/]: {n} record(s); chain, copies, registry anchors"
        f"{' and weights' if weights else ''} verified"
    )


@audit_app.command("show")
def audit_show(
    request_id: Annotated[str, typer.Argument(help="The deletion request.")],
    store: StoreOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write proof.md, proof.html and the evidence here.")
    ] = None,
) -> None:
    """The proof of deletion for one request (Markdown on screen; Markdown + HTML with --out)."""
    import shutil

    from rfau.audit.proof import render_proof
    from rfau.audit.trail import AuditTrail
    from rfau.io import atomic_dir

    try:
        trail = AuditTrail.open(_store(store), _settings())
        records = trail.find_request(request_id)
        if not records:
            raise RfauError(
                f"request {request_id!r} is in no ledger record (still pending, rejected, or unknown)"
            )
        record = records[-1]  # the batch that settled it (earlier ones failed a gate)
        evidence = trail.evidence_dir(record["batch_id"])
        md, html = render_proof(record, request_id, evidence)
        if out_dir:
            with atomic_dir(out_dir) as tmp:
                (tmp / "proof.md").write_text(md)
                (tmp / "proof.html").write_text(html)
                if evidence.is_dir():
                    for f in evidence.iterdir():
                        shutil.copy2(f, tmp / f.name)
    except RfauError as e:
        _fail(e)
    from rich.markdown import Markdown

    out.print(Markdown(md))
    if out_dir:
        out.print(f"proof written to {out_dir}/proof.md and {out_dir}/proof.html")
