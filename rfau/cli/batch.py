"""`rfau batch ...`: One deletion batch: all pending requests -> one new model version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rfau.batch import BatchContext, data_split, evaluate, register, run_batch, unlearn
from rfau.batch.preflight import check_before_claiming
from rfau.batch.runner import RUN, is_batch_workdir
from rfau.cli.common import (
    JsonOpt,
    ParamsOpt,
    RfauTyper,
    SetOpt,
    emit,
    err,
    out,
    store_uri,
    tracking_settings,
)
from rfau.cli.render import (
    exit_if_gates_failed,
    exit_if_overdue,
    print_registered,
    print_split,
    warn_stuck,
)
from rfau.data.request_store import RequestStore
from rfau.io import claim_output
from rfau.params import load_params
from rfau.records import Skipped

batch_app = RfauTyper(
    help="One deletion batch: all pending requests -> one new model version.", no_args_is_help=True
)


# --- batch stages (what dvc.yaml calls) ---------------------------------------------------------------


@batch_app.command("split")
def batch_split(
    out_dir: Annotated[Path, typer.Option("--out", "--output", "-o", help="Batch folder to write.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """data-split: claim the pending requests -> batch folder (requests/, split/, base/, batch.json)."""
    claim_output(out_dir, "batch split")  # before anything is claimed
    p = load_params(params, set_)
    settings = tracking_settings()
    check_before_claiming(p, settings, device_here=False)
    meta = data_split(
        out_dir,
        p.dataset,
        BatchContext.open(p.store or None, settings),
        p.holdout_fraction,
        p.train,
        base_model_uri=p.base_model_uri,
        params=p,
    )
    print_split(meta)
    emit(as_json, meta)


@batch_app.command("unlearn")
def batch_unlearn(
    batch: Annotated[Path, typer.Option(help="Batch folder from `rfau batch split`.")],
    out_dir: Annotated[Path, typer.Option("--out", "--output", "-o", help="Model folder to write.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """unlearn: forget the batch's forget set from its base (the champion)."""
    claim_output(out_dir, "batch unlearn")
    p = load_params(params, set_)
    info = unlearn(batch, out_dir, p.method, p.method_config)
    emit(
        as_json,
        info,
        lambda: out.print(
            f"skipped: {info.reason}"
            if isinstance(info, Skipped)
            else f"{info.method}: {info.seconds:.1f} s, {info.trainable_params:,} trainable parameters"
        ),
    )


@batch_app.command("evaluate")
def batch_evaluate(
    batch: Annotated[Path, typer.Option(help="Batch folder.")],
    model: Annotated[Path, typer.Option(help="Unlearned model folder.")],
    out_dir: Annotated[Path, typer.Option("--out", "--output", "-o", help="Evaluation folder to write.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """evaluate: new model vs champion, gate verdicts, plots, report."""
    claim_output(out_dir, "batch evaluate")
    p = load_params(params, set_)
    flat = evaluate(batch, model, out_dir, p.gates)
    emit(as_json, flat, lambda: out.print_json(data=flat.model_dump(mode="json", exclude_none=True)))


@batch_app.command("register")
def batch_register(
    batch: Annotated[Path, typer.Option(help="Batch folder.")],
    model: Annotated[Path, typer.Option(help="Unlearned model folder.")],
    evaluation: Annotated[Path, typer.Option(help="Evaluation folder.")],
    out_dir: Annotated[Path, typer.Option("--out", "--output", "-o", help="Folder for registered.json.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """register: new registry version (champion only if gates pass), ledger record, request states.

    Exit code 1 when a gate failed (as `rfau batch run`): a script driving `dvc repro` sees it."""
    claim_output(out_dir, "batch register")  # before anything is registered
    p = load_params(params, set_)
    ctx = BatchContext.of_batch(batch, tracking_settings(), p.store or None)
    res = register(batch, model, evaluation, out_dir, ctx, p.gates)
    emit(as_json, res, lambda: print_registered(res))
    exit_if_gates_failed(res)


@batch_app.command("run")
def batch_run(
    workdir: Annotated[Path, typer.Option("--workdir", "-w", help="Where the stages write.")] = Path(
        "runs/batch"
    ),
    params: ParamsOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """All four stages in this process (what one scheduled pipeline run does).

    Exit code 1 when the batch completed but a gate failed: its version is not champion, its
    requests are pending again."""
    claim_output(workdir, RUN, is_batch_workdir)  # before anything is claimed
    p = load_params(params, set_)
    settings = tracking_settings()
    check_before_claiming(p, settings, device_here=True)
    # also: a store never initialised fails here, before the work folder is made
    warn_stuck(RequestStore.open(store_uri(p.store)))
    res = run_batch(workdir, p, settings)
    for r in res.rejected:
        err.print(f"[yellow]rejected {r.request_id}:[/] {r.reason}")
    for r in res.deferred:
        err.print(f"[yellow]deferred {r.request_id}:[/] {r.reason}")
    if res.registered is None:
        emit(as_json, res, lambda: out.print(f"batch {res.batch_id}: nothing to do"))
        exit_if_overdue(store_uri(p.store), p.deadline_days)
        return
    registered = res.registered
    emit(as_json, res, lambda: print_registered(registered))
    exit_if_overdue(store_uri(p.store), p.deadline_days)
    exit_if_gates_failed(res.registered)
