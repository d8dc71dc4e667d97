"""`rfau request ...`: Deletion requests: add them, list them with their states."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rfau.cli.common import (
    StoreOpt,
    out,
    store_uri,
)
from rfau.errors import RfauError

request_app = typer.Typer(
    help="Deletion requests: add them, list them with their states.", no_args_is_help=True
)


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

    ds = None if dataset in (None, "none") else load_dataset(dataset)
    added = RequestStore.from_uri(store_uri(store)).add(list(paths), ds)
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
        raise RfauError(
            f"--state must be one of {', '.join(s.value for s in RequestState)}, got {state!r}"
        ) from None
    rows = RequestStore.from_uri(store_uri(store)).list(want)
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
