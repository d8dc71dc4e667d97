"""`rfau batch ...`: One deletion batch: all pending requests -> one new model version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rfau.cli.common import (
    JsonOpt,
    ParamsOpt,
    RfauTyper,
    SetOpt,
    check_method_settings,
    emit,
    err,
    out,
    store_uri,
    tracking_settings,
)
from rfau.cli.render import exit_if_gates_failed, exit_if_overdue, print_registered, print_split
from rfau.io import claim_output
from rfau.params import BatchParams, load_params
from rfau.tracking.settings import TrackingSettings

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
    from rfau.batch import BatchContext, data_split

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
    from rfau.batch import unlearn
    from rfau.records import Skipped

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
    from rfau.batch import evaluate

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
    from rfau.batch import BatchContext, register

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
    from rfau.batch import run_batch
    from rfau.batch.runner import RUN, is_batch_workdir

    claim_output(workdir, RUN, is_batch_workdir)  # before anything is claimed
    p = load_params(params, set_)
    settings = tracking_settings()
    check_before_claiming(p, settings, device_here=True)
    _warn_stuck(p.store)  # also: a store never initialised fails here, before the work folder is made
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


def _warn_stuck(store: str | None) -> None:
    from rfau.cli.request import warn_stuck
    from rfau.data.request_store import RequestStore

    warn_stuck(RequestStore.open(store_uri(store)))


def check_before_claiming(p: BatchParams, settings: TrackingSettings, device_here: bool) -> None:
    """Method settings that would fail the unlearn stage fail here, before a request is claimed
    (load_params checked their form): the device (its availability only where the whole batch
    runs in this process) and the modules named by target_modules/taps, against the model the
    batch starts from."""
    cfg = check_method_settings(p.method, p.method_config, device_here)
    if getattr(cfg, "target_modules", None) or getattr(cfg, "taps", None):
        from rfau.methods.rfau import resolve_modules

        resolve_modules(_starting_model(p, settings), cfg)
    if (
        settings.registry_exists()
    ):  # a store that is down or an experiment deleted fails here, not in register
        from rfau.tracking.registry import Registry

        Registry(settings)


def _starting_model(p: BatchParams, settings: TrackingSettings):
    """The architecture (untrained) of the batch's base: the champion's, else the bootstrap
    recipe's. A local registry that does not exist yet is not created here."""
    import tempfile

    from rfau.models.arch import build_model

    champion = None
    if settings.registry_exists():
        from rfau.tracking.registry import Registry

        reg = Registry(settings)
        champion = reg.champion()
    if champion is not None:
        from rfau.models.checkpoint import build_from_card, read_card

        with tempfile.TemporaryDirectory() as tmp:
            card = read_card(reg.fetch_version(champion.version, Path(tmp) / "base"))
        return build_from_card(card)  # any family: an imported model's own module names
    from rfau.config import TrainConfig
    from rfau.data import load_dataset
    from rfau.models.arch import default_architecture

    ds = load_dataset(p.dataset)
    if p.base_model_uri:  # the first batch starts from the user's model (imported here to look)
        from rfau.batch import BatchContext, staged_base_model
        from rfau.models.checkpoint import build_from_card, read_card

        ctx = BatchContext.open(p.store or None, settings)
        with staged_base_model(p.base_model_uri, ds, ctx, p.holdout_fraction) as original:
            if original is not None:
                return build_from_card(read_card(original))
    cfg = TrainConfig.preset(ds.kind, **p.train)
    kwargs = {"width": cfg.width} if cfg.width else {}
    arch = cfg.architecture or default_architecture(ds.kind)
    return build_model(arch, ds.input_shape[0], len(ds.classes), **kwargs)
