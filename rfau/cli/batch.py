"""`rfau batch ...`: One deletion batch: all pending requests -> one new model version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rfau.cli.common import (
    ParamsOpt,
    SetOpt,
    err,
    out,
    store_uri,
    tracking_settings,
)
from rfau.cli.render import print_registered, print_split
from rfau.errors import RfauError
from rfau.params import load_params

batch_app = typer.Typer(
    help="One deletion batch: all pending requests -> one new model version.", no_args_is_help=True
)


# --- batch stages (what dvc.yaml calls) ---------------------------------------------------------------


@batch_app.command("split")
def batch_split(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Batch folder to write.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """data-split: claim the pending requests -> batch folder (requests/, split/, base/, batch.json)."""
    from rfau.batch import data_split

    p = load_params(params, set_)
    meta = data_split(out_dir, p.dataset, p.store, tracking_settings(), p.holdout_fraction, p.train)
    print_split(meta)


@batch_app.command("unlearn")
def batch_unlearn(
    batch: Annotated[Path, typer.Option(help="Batch folder from `rfau batch split`.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """unlearn: forget the batch's forget set from its base (the champion)."""
    from rfau.batch import unlearn
    from rfau.records import Skipped

    p = load_params(params, set_)
    info = unlearn(batch, out_dir, p.method, p.method_config)
    out.print(
        f"skipped: {info.reason}"
        if isinstance(info, Skipped)
        else f"{info.method}: {info.seconds:.1f} s, {info.trainable_params:,} trainable parameters"
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

    p = load_params(params, set_)
    flat = evaluate(batch, model, out_dir, p.gates)
    out.print(flat.model_dump(exclude_none=True))


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

    p = load_params(params, set_)
    res = register(batch, model, evaluation, out_dir, tracking_settings(), p.gates, p.store)
    print_registered(res)


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

    p = load_params(params, set_)
    _warn_stuck(p.store)
    res = run_batch(
        workdir,
        p.dataset,
        p.store,
        tracking_settings(),
        p.method,
        p.method_config,
        p.gates,
        p.train,
        p.holdout_fraction,
    )
    for r in res.rejected:
        err.print(f"[yellow]rejected {r.request_id}:[/] {r.reason}")
    for r in res.deferred:
        err.print(f"[yellow]deferred {r.request_id}:[/] {r.reason}")
    if res.registered is None:
        out.print(f"batch {res.batch_id}: nothing to do")
    else:
        print_registered(res.registered)


def _warn_stuck(store: str | None) -> None:
    from rfau.cli.request import warn_stuck
    from rfau.data.request_store import RequestStore

    try:
        warn_stuck(RequestStore.open(store_uri(store)))
    except RfauError:
        pass  # the batch itself reports a store that cannot be opened
