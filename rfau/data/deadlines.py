"""When a deletion is due, and how many batches failed it: read from a request and its events
(``rfau.data.request_store``), for the escalation ladder's scheduling and `rfau request list`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rfau.data.request_store import RequestState, RequestStatus, RequestStore, _received_key
from rfau.data.requests import DeletionRequest

# the phrase in a release that counts as a failed batch (rfau.batch.registration writes it)
FAILED_GATES = "failed gates"


def failed_batches(status: RequestStatus) -> int:
    """How many batches failed this request at their gates (releases that say so)."""
    return sum(
        1
        for ev in status.history
        if ev["state"] == RequestState.PENDING.value and ev["batch_id"] and FAILED_GATES in ev["detail"]
    )


def due_at(req: DeletionRequest, default_days: int) -> datetime:
    """When the deletion is due: received_at + its own deadline_days, else ``default_days``."""
    return _received_key(req) + timedelta(days=req.deadline_days or default_days)


def unfinished_overdue(store: RequestStore, default_days: int, now: datetime | None = None) -> list[str]:
    """Ids of the requests past their due date that are not fulfilled (nor rejected or cancelled)."""
    now = now or datetime.now(UTC)
    open_states = (RequestState.PENDING, RequestState.IN_PROGRESS, RequestState.NEEDS_RETRAIN)
    return [
        st.request_id
        for st in store.list()
        if st.state in open_states and due_at(st.request, default_days) < now
    ]
