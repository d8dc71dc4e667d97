"""Model registry commands: register, promote, rollback, models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rfau.cli.common import (
    ModelNameOpt,
    TrackingOpt,
    app,
    err,
    out,
    parse_overrides,
    tracking_settings,
)
from rfau.errors import RfauError


@app.command()
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
) -> None:
    """Register a model version; it becomes champion only when every gate passes."""
    from rfau.gates import Gates
    from rfau.tracking.registry import register as do_register

    try:
        g = Gates(**parse_overrides(gates, None)) if gates else Gates()
    except ValueError as e:  # pydantic: bad gate settings
        raise RfauError(f"invalid gates in {gates}: {e}") from None
    res = do_register(model_dir, metrics, tracking_settings(name, tracking_uri), g, baseline, bootstrap)
    out.print_json(res.model_dump_json())
    if not bootstrap and not res.gates_passed:
        err.print("[yellow]a gate failed: the champion is unchanged (see gate_failures on the version)[/]")


@app.command()
def promote(
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
    name: ModelNameOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Make a version champion by hand; the old champion becomes 'previous'."""
    from rfau.tracking.registry import promote as do_promote

    out.print_json(
        do_promote(tracking_settings(name, tracking_uri), version).model_dump_json(exclude_none=True)
    )


@app.command()
def rollback(name: ModelNameOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Give the champion alias back to the 'previous' version."""
    from rfau.tracking.registry import rollback as do_rollback

    out.print_json(do_rollback(tracking_settings(name, tracking_uri)).model_dump_json())


@app.command()
def models(name: ModelNameOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Registered versions with their aliases and gate verdicts."""
    from rfau.tracking.registry import list_versions

    rows = list_versions(tracking_settings(name, tracking_uri))
    t = Table("version", "aliases", "gates", "method", "requests", "gate failures")
    for r in rows:
        t.add_row(
            str(r.version),
            ", ".join(r.aliases),
            str(r.gates_passed),
            str(r.method),
            str(r.requests),
            str(r.gate_failures),
        )
    out.print(t)
