"""A deletion request's states and status, read from its events (``rfau.data.request_store``
owns the moves between them; ``rfau.data.request_backend`` stores them)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import ValidationError

from rfau.data.requests import DeletionRequest
from rfau.errors import RequestError, UsageError, validation_problems

ROOT = "requests/"
_EVENT = re.compile(r"^(\d{6,})-([a-z-]+)\.json$")
# the same rule as DeletionRequest.request_id: safe as one key segment
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class RequestState(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in-progress"
    FULFILLED = "fulfilled"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    NEEDS_RETRAIN = "needs-retrain"


MARKER = "store.json"
LOCK = "locks/requests.lock"
# held for a few store operations; a holder that died (or lost the store) leaves the lock behind,
# and it is broken once older than LOCK_STALE_S, which a waiter always outlasts
LOCK_WAIT_S, LOCK_STALE_S = 90.0, 60.0
STALE_AFTER_HOURS_DEFAULT = 6.0


def stale_after_hours() -> float:
    """How long a request may stay in-progress before it counts as stuck (RFAU_STALE_AFTER_HOURS)."""
    raw = os.environ.get("RFAU_STALE_AFTER_HOURS", "")
    if not raw:
        return STALE_AFTER_HOURS_DEFAULT
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise UsageError(f"RFAU_STALE_AFTER_HOURS={raw!r} is not a positive number of hours")
    return hours


@dataclass
class RequestStatus:
    request_id: str
    state: RequestState
    updated_at: str  # UTC ISO time of the last event
    batch_id: str | None  # the batch that made the last change (None when just received)
    detail: str
    request: DeletionRequest
    history: list[dict] = field(default_factory=list)  # every event, oldest first, with its "seq"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _received_key(req: DeletionRequest) -> datetime:
    t = req.received_at
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # a naive time is taken as UTC


def _unset_optional(req: DeletionRequest) -> set[str]:
    """Fields added later, left off when unset (request files stay as earlier versions wrote them)."""
    return {"deadline_days"} if req.deadline_days is None else set()


class CorruptPendingRequest(RequestError):
    """A request not held by any batch or model (pending, rejected, cancelled) whose request.json
    cannot be read: batches leave it alone (its file and events stay as they are: nothing is
    lost) until it is repaired."""


def _corrupt(rid: str, where: str, e: ValueError, keys: list[str]) -> RequestError:
    """A corrupt request.json as one line. Pending (or rejected, cancelled: its last event by
    name): batches skip it. In progress or fulfilled, it blocks: its samples must stay out of every
    later model, and nobody can read them."""
    problem = validation_problems(e) if isinstance(e, ValidationError) else str(e).splitlines()[0]
    states = sorted((m.group(1), m.group(2)) for k in keys if (m := _EVENT.match(k.rsplit("/", 1)[-1])))
    what = f"request {rid!r} is corrupt ({where}: {problem[:200]}); restore that file as received"
    held = (RequestState.IN_PROGRESS.value, RequestState.FULFILLED.value)
    if not states or states[-1][1] not in held:  # nothing of it is in or out of any model
        return CorruptPendingRequest(f"{what}; batches skip it until then")
    return RequestError(
        f"{what}: it is {states[-1][1]}, so no batch can run until then (its samples must stay out)"
    )
