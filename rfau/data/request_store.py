"""The life of a deletion request: the only legal moves between its states. The request and its
events live in a Store shared by every worker (``rfau.data.request_backend``: layout, one
exclusive event per move, the lock); batch code and operator commands move requests only through
the methods here.

States and the only legal moves::

    pending --claim_pending(batch)--> in-progress(batch)
    in-progress(batch) --fulfil(batch)--> fulfilled          (final, unless reopened)
    in-progress(batch) --reject(batch)--> rejected           (final)
    in-progress(batch) --release(batch)--> pending           (e.g. the new model failed its gates)
    in-progress(batch) --needs_retrain(batch)--> needs-retrain (no rung can certify it: the exact
                                                              rung is refused or failed; the reason says why)
    needs-retrain --requeue--> pending                        (an operator re-queues it, e.g. after
                                                              adding a retrainable recipe)
    in-progress(any) --operator_release--> pending           (an operator frees a stuck request)
    pending|in-progress --operator_reject--> rejected         (final)
    pending --cancel--> cancelled                             (final: the requester withdrew)
    needs-retrain --operator_reject--> rejected               (final)
    fulfilled --operator_reopen--> pending                    (the champion moved back to a version
                                                              that holds its data: `--reopen`)

Operator moves (and a batch's last check of its claims before its ledger record) hold the store's
lock (``locked``: an object created exclusively, ``locks/requests.lock``), so a request released
by an operator is never recorded as fulfilled by a batch at the same moment.

Due dates and failed-batch counts: ``rfau.data.deadlines``.

Only the batch that claimed a request may move it on (``release_stale`` moves a dead batch's).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rfau.data.request_backend import StoredRequests
from rfau.data.request_events import (
    MARKER,
    CorruptPendingRequest,
    RequestState,
    RequestStatus,
    _received_key,
    stale_after_hours,
)
from rfau.data.requests import samples_of
from rfau.errors import RequestError, RfauError
from rfau.storage import AlreadyExists
from rfau.tracking.settings import TrackingSettings

if TYPE_CHECKING:  # torch: imported only where a dataset is loaded
    from rfau.data.base import Dataset

__all__ = [
    "MARKER",
    "CorruptPendingRequest",
    "RequestState",
    "RequestStatus",
    "RequestStore",
    "_received_key",
    "default_store",
    "stale_after_hours",
]


class RequestStore(StoredRequests):
    """Deletion requests and their states in a Store; safe to share between concurrent workers.
    Every move between states is a method here (the module's docstring lists them)."""

    def claim_pending(self, batch_id: str) -> list[RequestStatus]:
        """Move every pending request to in-progress for ``batch_id``; return those this call won.

        A request another worker claims meanwhile is skipped (its exclusive event create fails).
        """
        self._check_batch(batch_id)
        claimed = []
        for status in self.list(RequestState.PENDING):
            seq = status.history[-1]["seq"] + 1
            try:
                self._put_event(status.request_id, seq, RequestState.IN_PROGRESS, batch_id, "claimed")
            except (AlreadyExists, RequestError):
                continue
            claimed.append(self.get(status.request_id))
        return claimed

    def fulfil(self, request_id: str, batch_id: str, detail: str) -> RequestStatus:
        return self._move(request_id, batch_id, RequestState.FULFILLED, detail)

    def reject(self, request_id: str, batch_id: str, reason: str) -> RequestStatus:
        return self._move(request_id, batch_id, RequestState.REJECTED, reason)

    def release(self, request_id: str, batch_id: str, reason: str) -> RequestStatus:
        return self._move(request_id, batch_id, RequestState.PENDING, reason)

    def needs_retrain(self, request_id: str, batch_id: str, reason: str) -> RequestStatus:
        return self._move(request_id, batch_id, RequestState.NEEDS_RETRAIN, reason)

    def _check_batch(self, batch_id: str) -> None:
        if not isinstance(batch_id, str) or not batch_id.strip():
            raise RequestError(f"batch id must be a non-empty string, got {batch_id!r}")

    def _move(self, request_id: str, batch_id: str, to: RequestState, detail: str) -> RequestStatus:
        """in-progress (claimed by ``batch_id``) -> ``to``; anything else is a RequestError."""
        self._check_batch(batch_id)
        status = self.get(request_id)
        verb = {
            RequestState.FULFILLED: "fulfil",
            RequestState.REJECTED: "reject",
            RequestState.PENDING: "release",
            RequestState.NEEDS_RETRAIN: "escalate",
        }[to]
        if status.state != RequestState.IN_PROGRESS:
            raise RequestError(
                f"cannot {verb} request {request_id!r} for batch {batch_id!r}: it is "
                f"{status.state.value}, not in-progress"
            )
        if status.batch_id != batch_id:
            raise RequestError(
                f"cannot {verb} request {request_id!r} for batch {batch_id!r}: it is "
                f"in-progress for batch {status.batch_id!r}"
            )
        try:
            self._put_event(request_id, status.history[-1]["seq"] + 1, to, batch_id, str(detail))
        except AlreadyExists:
            now = self._state_word(request_id)
            raise RequestError(
                f"cannot {verb} request {request_id!r} for batch {batch_id!r}: it was "
                f"changed at the same time (now {now})"
            ) from None
        return self.get(request_id)

    # -- operator moves and stuck requests ---------------------------------------------------------
    def _operator_move(
        self, request_id: str, allowed: tuple[RequestState, ...], to: RequestState, detail: str
    ):
        with self.locked(f"operator {to.value} {request_id}"):
            return self._operator_move_locked(request_id, allowed, to, detail)

    def _operator_move_locked(
        self, request_id: str, allowed: tuple[RequestState, ...], to: RequestState, detail: str
    ):
        status = self.get(request_id)
        if status.state not in allowed:
            raise RequestError(
                f"cannot move request {request_id!r} to {to.value}: it is {status.state.value}, "
                f"not {' or '.join(a.value for a in allowed)}"
            )
        try:
            self._put_event(request_id, status.history[-1]["seq"] + 1, to, None, f"operator: {detail}")
        except AlreadyExists:
            raise RequestError(f"request {request_id!r} was changed at the same time; look again") from None
        return self.get(request_id)

    def operator_release(self, request_id: str, reason: str = "released by operator") -> RequestStatus:
        """in-progress (any batch) -> pending; that batch's later moves on it are refused."""
        return self._operator_move(request_id, (RequestState.IN_PROGRESS,), RequestState.PENDING, reason)

    def operator_reject(self, request_id: str, reason: str) -> RequestStatus:
        """pending or in-progress -> rejected (final), with the operator's reason."""
        if not str(reason).strip():
            raise RequestError("a rejection needs a reason")
        allowed = (RequestState.PENDING, RequestState.IN_PROGRESS, RequestState.NEEDS_RETRAIN)
        return self._operator_move(request_id, allowed, RequestState.REJECTED, reason)

    def requeue(self, request_id: str, reason: str = "re-queued by operator") -> RequestStatus:
        """needs-retrain -> pending: the next batch takes it up again (alone, on the exact rung,
        once it has failed max_attempts batches)."""
        return self._operator_move(request_id, (RequestState.NEEDS_RETRAIN,), RequestState.PENDING, reason)

    def cancel(self, request_id: str, reason: str = "withdrawn by the requester") -> RequestStatus:
        """pending -> cancelled (final): the requester withdrew before any batch took it."""
        return self._operator_move(request_id, (RequestState.PENDING,), RequestState.CANCELLED, reason)

    def operator_reopen(self, request_id: str, reason: str) -> RequestStatus:
        """fulfilled -> pending: the champion moved back to a version that still holds the
        request's data (``rfau promote/rollback --reopen``); a new batch forgets it again. The
        caller holds ``locked`` and writes the ledger record of the move."""
        if not str(reason).strip():
            raise RequestError("reopening a request needs a reason")
        return self._operator_move_locked(request_id, (RequestState.FULFILLED,), RequestState.PENDING, reason)

    def stale_in_progress(self, older_than_hours: float | None = None) -> list[RequestStatus]:
        """In-progress requests whose last change is older than the window (for warnings)."""
        hours = stale_after_hours() if older_than_hours is None else older_than_hours
        cutoff = datetime.now(UTC) - timedelta(hours=hours)
        return [
            st for st in self.list(RequestState.IN_PROGRESS) if datetime.fromisoformat(st.updated_at) < cutoff
        ]

    def release_stale(
        self, older_than_hours: float | None = None, *, by_operator: bool = True
    ) -> list[RequestStatus]:
        """Release every request in-progress for longer than the window; returns those released
        (one its batch moved meanwhile is skipped). By an operator (`rfau request release
        --stale`: under the store's lock, the event names no batch), or, ``by_operator=False``,
        in the name of the batch that held it, as a new batch does before it claims: the event
        says that batch did not finish."""
        hours = stale_after_hours() if older_than_hours is None else older_than_hours
        out = []
        for st in self.stale_in_progress(hours):
            try:
                if by_operator:
                    why = f"in-progress since {st.updated_at} (stale)"
                    out.append(self.operator_release(st.request_id, why))
                else:
                    why = f"batch {st.batch_id} did not finish within {hours} h"
                    out.append(self.release(st.request_id, st.batch_id or "", why))
            except RequestError:
                continue
        return out

    def release_all(
        self, ids: list[str], batch_id: str, cause: BaseException | str, why: str | None = None
    ) -> list[str]:
        """Put a failed batch's requests back (those it still holds) -> the ids released; each
        event says ``why`` (default: the batch failed, and ``cause``). If that fails too (a full
        disk, a store that is down), raise naming the batch's own failure first."""
        if isinstance(cause, BaseException):
            cause = str(cause) or type(cause).__name__
        why = (why or f"batch {batch_id} failed: {cause}")[:500]
        released, failed = [], []
        for rid in ids:
            try:
                st = self.get(rid)
                if st.state is RequestState.IN_PROGRESS and st.batch_id == batch_id:
                    self.release(rid, batch_id, why)
                    released.append(rid)
            except Exception as e:  # disk full, store down: the original cause must not be lost
                failed.append(f"{rid}: {str(e) or type(e).__name__}")
        if failed:
            raise RfauError(
                f"batch {batch_id} failed ({cause}) and releasing its requests failed too "
                f"({'; '.join(failed)[:500]}); they stay in-progress until 'rfau request release --stale'"
            )
        return released


def default_store(settings: TrackingSettings | None = None) -> str:
    """Where requests and the ledger's object-store copy live: $RFAU_REQUEST_STORE (a folder or
    s3://bucket/prefix), else a folder in the local state directory."""

    settings = settings or TrackingSettings.from_env()
    return os.environ.get("RFAU_REQUEST_STORE") or str(settings.state_dir / "store")


def requested_samples(
    store: RequestStore, ds: Dataset, states: set[RequestState]
) -> tuple[list[str], list[str]]:
    """(sample ids, request ids) of every request in ``states``."""
    return samples_of([st for st in store.list() if st.state in states], ds)
