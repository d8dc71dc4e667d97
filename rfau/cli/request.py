"""`rfau request ...`: Deletion requests: add them, list them with their states."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import rfau.data
from rfau.audit.trail import AuditTrail
from rfau.cli.common import JsonOpt, RfauTyper, StoreOpt, emit, out, store_uri
from rfau.cli.render import warn_stuck
from rfau.data.deadlines import due_at, failed_batches
from rfau.data.request_store import RequestState, RequestStore
from rfau.errors import UsageError

request_app = RfauTyper(
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
    as_json: JsonOpt = False,
) -> None:
    """Validate requests and queue them as pending (all or nothing)."""
    ds = None if dataset in (None, "none") else rfau.data.load_dataset(dataset)
    added = RequestStore.from_uri(store_uri(store)).add(list(paths), ds)
    emit(
        as_json,
        {"added": added},
        lambda: out.print(f"added {len(added)} pending request(s): {', '.join(added)}"),
    )


DeadlineOpt = Annotated[
    int,
    typer.Option(
        "--deadline-days",
        min=1,
        envvar="RFAU_DEADLINE_DAYS",
        help="Days from received_at to a request's due date where it names none (the batch "
        "parameter deadline_days; $RFAU_DEADLINE_DAYS).",
    ),
]


@request_app.command("list")
def request_list(
    store: StoreOpt = None,
    state: Annotated[
        str | None,
        typer.Option(help="Only this state: pending, in-progress, needs-retrain, fulfilled or rejected."),
    ] = None,
    deadline_days: DeadlineOpt = 30,
    as_json: JsonOpt = False,
) -> None:
    """Requests with their states (and why: the batch, the model version, or the rejection reason),
    their due dates (overdue: past due and not fulfilled) and the escalation rungs tried for them."""
    try:
        want = RequestState(state) if state else None
    except ValueError:
        raise UsageError(
            f"--state must be one of {', '.join(s.value for s in RequestState)}, got {state!r}"
        ) from None
    reqs = RequestStore.open(store_uri(store))  # a mistyped store: exit 2, never an empty table
    rows = reqs.list(want)
    warn_stuck(reqs)
    tried = _attempts_by_request(reqs)
    shown = [{**_status_json(r), **_schedule_json(r, deadline_days, tried)} for r in rows]
    if as_json:
        emit(as_json, shown)
        return
    t = Table("request", "state", "due", "updated", "batch", "attempts", "detail")
    for r, row in zip(rows, shown, strict=True):
        due = row["due"][:10] + (" [red]OVERDUE[/]" if row["overdue"] else "")
        rungs = ", ".join(f"{a['method']} {'ok' if a['gates_passed'] else 'failed'}" for a in row["attempts"])
        t.add_row(
            r.request_id, r.state.value, due, r.updated_at[:19], r.batch_id or "-", rungs or "-", r.detail
        )
    out.print(t)


def _attempts_by_request(reqs) -> dict[str, list[dict]]:
    """The escalation rungs the ledger records for each request, oldest batch first."""
    by: dict[str, list[dict]] = {}
    for rec in AuditTrail.open(reqs.store.uri).records():
        for rid in rec.get("request_ids", []):
            by.setdefault(rid, []).extend({"batch_id": rec["batch_id"], **a} for a in rec.get("attempts", []))
    return by


def _schedule_json(status, deadline_days: int, tried: dict[str, list[dict]]) -> dict:
    """Due date, overdue flag, failed batches and rungs tried, as `request list` shows them."""
    due = due_at(status.request, deadline_days)
    settled = (RequestState.FULFILLED, RequestState.REJECTED, RequestState.CANCELLED)
    return {
        "due": due.isoformat(),
        "overdue": status.state not in settled and due < datetime.now(UTC),
        "failed_batches": failed_batches(status),
        "attempts": tried.get(status.request_id, []),
    }


def _status_json(status) -> dict:
    """A request's state as `request list --json` and the operator commands print it."""
    return {
        "request_id": status.request_id,
        "state": status.state.value,
        "updated_at": status.updated_at,
        "batch_id": status.batch_id,
        "detail": status.detail,
    }


@request_app.command("release")
def request_release(
    request_id: Annotated[str | None, typer.Argument(help="The in-progress request to put back.")] = None,
    stale: Annotated[
        bool, typer.Option("--stale", help="Release every request stuck longer than the batch timeout.")
    ] = False,
    reason: Annotated[
        str, typer.Option(help="Why (kept in the request's history).")
    ] = "released by operator",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put in-progress requests back to pending (after a crash, an outage or a full disk)."""
    if (request_id is None) == (not stale):
        raise typer.BadParameter("give a request id or --stale (not both)")
    reqs = RequestStore.open(store_uri(store))
    done = reqs.release_stale() if stale else [reqs.operator_release(request_id or "", reason)]
    emit(
        as_json,
        [_status_json(s) for s in done],
        lambda: out.print(f"released: {', '.join(s.request_id for s in done) or 'none'}"),
    )


@request_app.command("reject")
def request_reject(
    request_id: Annotated[str, typer.Argument(help="A pending or in-progress request.")],
    reason: Annotated[str, typer.Option(help="Why it is refused (required; kept in its history).")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Refuse a request for good, with a reason."""
    st = RequestStore.open(store_uri(store)).operator_reject(request_id, reason)
    emit(as_json, _status_json(st), lambda: out.print(f"{st.request_id}: {st.state.value}"))


@request_app.command("cancel")
def request_cancel(
    request_id: Annotated[str, typer.Argument(help="A pending request the requester withdrew.")],
    reason: Annotated[
        str, typer.Option(help="Kept in the request's history.")
    ] = "withdrawn by the requester",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw a pending request (final state: cancelled)."""
    st = RequestStore.open(store_uri(store)).cancel(request_id, reason)
    emit(as_json, _status_json(st), lambda: out.print(f"{st.request_id}: {st.state.value}"))


@request_app.command("requeue")
def request_requeue(
    request_id: Annotated[str, typer.Argument(help="A request in needs-retrain.")],
    reason: Annotated[str, typer.Option(help="Kept in the request's history.")] = "re-queued by operator",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put a needs-retrain request back to pending (e.g. once its model can be retrained)."""
    st = RequestStore.open(store_uri(store)).requeue(request_id, reason)
    emit(as_json, _status_json(st), lambda: out.print(f"{st.request_id}: {st.state.value}"))
