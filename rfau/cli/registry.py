"""Model registry commands (top-level): register, promote, rollback, models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rfau.audit.moves import move_champion
from rfau.cli.common import (
    JsonOpt,
    ModelNameOpt,
    RfauTyper,
    StoreOpt,
    TrackingOpt,
    emit,
    err,
    out,
    parse_overrides,
    store_uri,
    tracking_settings,
)
from rfau.errors import ExitCode, UsageError
from rfau.gates import Gates, check_gates
from rfau.records import Evaluation, GateReport
from rfau.tracking.aliases import list_versions
from rfau.tracking.registry import Registry
from rfau.tracking.versions import register as do_register

# each command is a top-level `rfau NAME` (rfau.cli.COMMANDS)
registry_app = RfauTyper()


@registry_app.command()
def register(
    model_dir: Annotated[
        Path, typer.Option("--model", "-m", help="Unlearned model folder (from `rfau unlearn`).")
    ],
    metrics: Annotated[Path, typer.Option(help="Its evaluation JSON (from `rfau evaluate`).")],
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="Evaluation JSON of the model it was unlearned from, on the same split (for the drop gates)."
        ),
    ] = None,
    gates: Annotated[
        Path | None, typer.Option(help="JSON file with gate bounds (see rfau/gates.py).")
    ] = None,
    bootstrap: Annotated[
        bool, typer.Option(help="Register an original model: no gates; champion only if there is none.")
    ] = False,
    name: ModelNameOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a model version; it becomes champion only when every gate passes.

    Exit code 1 when a gate failed (the version is registered, the champion unchanged)."""
    try:
        g = Gates(**parse_overrides(gates, None)) if gates else Gates()
    except ValueError as e:  # pydantic: bad gate settings
        raise UsageError(f"invalid gates in {gates}: {e}") from None
    evaluation = Evaluation.read(metrics)
    before = Evaluation.read(baseline) if baseline else None
    report = GateReport.original() if bootstrap else check_gates(evaluation, before, g)
    res = do_register(Registry(tracking_settings(name, tracking_uri)), model_dir, evaluation, report)
    emit(as_json, res, lambda: out.print_json(res.model_dump_json()))
    if not bootstrap and not res.gates_passed:
        err.print("[yellow]a gate failed: the champion is unchanged (see gate_failures on the version)[/]")
        raise typer.Exit(code=ExitCode.CHECK_FAILED)


ReopenOpt = Annotated[
    bool,
    typer.Option(
        "--reopen",
        help="Move the alias even where the version holds data of fulfilled requests: they go back "
        "to pending (a new batch forgets them from it) and the ledger records the move.",
    ),
]
ReasonOpt = Annotated[str, typer.Option(help="Why (kept in the ledger record and the requests' history).")]


@registry_app.command()
def promote(
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
    reopen: ReopenOpt = False,
    reason: ReasonOpt = "",
    store: StoreOpt = None,
    name: ModelNameOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a version champion by hand; the old champion becomes 'previous'.

    Refused (exit 2) when the version still holds data of a fulfilled request, unless --reopen."""
    move = move_champion(tracking_settings(name, tracking_uri), store_uri(store), version, reopen, reason)
    emit(as_json, move, lambda: out.print_json(move.model_dump_json(exclude_none=True)))


@registry_app.command()
def rollback(
    reopen: ReopenOpt = False,
    reason: ReasonOpt = "",
    store: StoreOpt = None,
    name: ModelNameOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give the champion alias back to the 'previous' version.

    Refused (exit 2) when that version still holds data of a fulfilled request, unless --reopen."""
    move = move_champion(tracking_settings(name, tracking_uri), store_uri(store), None, reopen, reason)
    emit(as_json, move, lambda: out.print_json(move.model_dump_json()))


@registry_app.command()
def models(name: ModelNameOpt = None, tracking_uri: TrackingOpt = None, as_json: JsonOpt = False) -> None:
    """Registered versions with their aliases and gate verdicts."""
    rows = list_versions(tracking_settings(name, tracking_uri))
    if as_json:
        emit(as_json, rows)
        return
    t = Table("version", "aliases", "gates", "method", "requests", "gate failures")
    for r in rows:
        t.add_row(
            str(r.version),
            ", ".join(r.aliases),
            "-" if r.gates_passed is None else "passed" if r.gates_passed else "failed",
            str(r.method),
            str(r.requests),
            str(r.gate_failures),
        )
    out.print(t)
