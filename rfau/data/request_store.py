"""The life of a deletion request, kept in a Store (local folder or S3) shared by every worker.

Layout under the store root::

    requests/<request_id>/request.json                 the validated request (canonical JSON)
    requests/<request_id>/events/<NNNNNN>-<state>.json {"state", "at", "batch_id", "detail"}

Nothing is ever rewritten: every state change is one more event object, created with an
exclusive (create-only) write at the next sequence number, so the change is atomic and two workers
racing for the same transition cannot both win -- the loser's create fails and it moves on.
A request's state is its last event's. ``000000-pending`` is written by ``add``.

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

``store.json`` at the root marks an initialised store (written by ``add``); batch runs open the
store with ``open(uri, create=False)`` so a mistyped folder or prefix is an error, not "nothing to do".

Only the batch that claimed a request may move it on. Two different events at one sequence number
can only come from one batch making two moves on one request at once; the first by name wins
and the other writer gets a RequestError (its event is removed).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from rfau.data.requests import DeletionRequest, load_requests, resolve_forget_set
from rfau.errors import RequestError, RfauError, UnknownRequestError, UsageError, validation_problems
from rfau.io import canonical_json
from rfau.storage import AlreadyExists, NotFound, Store, open_store

if TYPE_CHECKING:  # torch: imported only where a dataset is loaded
    from rfau.data.base import Dataset
    from rfau.tracking.settings import TrackingSettings

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


class RequestStore:
    """Deletion requests and their states in a Store; safe to share between concurrent workers."""

    def __init__(self, store: Store):
        self.store = store
        self.corrupt: list[str] = []  # why each corrupt pending request was left out of list()

    @classmethod
    def from_uri(cls, uri: str | Path) -> RequestStore:
        return cls(open_store(uri))

    @classmethod
    def open(cls, uri: str | Path, create: bool = False) -> RequestStore:
        """The store at ``uri``; unless ``create``, one never initialised (no marker, no request)
        is an RfauError, so a mistyped folder or S3 prefix is not read as an empty queue."""
        if isinstance(uri, Path | str) and "://" not in str(uri) and Path(uri).is_file():
            raise UsageError(f"request store {str(uri)!r} is a file, not a folder")
        rs = cls.from_uri(uri)
        if create:
            rs.initialise()
        elif not rs.initialised():
            raise UsageError(
                f"request store {rs.store.uri!r} has never been initialised (no {MARKER}); "
                "check the path, or add a request first with 'rfau request add'"
            )
        return rs

    def initialised(self) -> bool:
        return self.store.exists(MARKER) or bool(self.store.list(ROOT))

    def initialise(self) -> None:
        if not self.store.exists(MARKER):
            try:
                self.store.put_bytes(
                    MARKER, canonical_json({"kind": "rfau-requests", "at": _now()}), exclusive=True
                )
            except AlreadyExists:
                pass  # a concurrent add initialised it

    def __repr__(self) -> str:
        return f"RequestStore({self.store.uri!r})"

    # -- keys ------------------------------------------------------------------------------------
    @staticmethod
    def _request_key(rid: str) -> str:
        return f"{ROOT}{rid}/request.json"

    @staticmethod
    def _event_key(rid: str, seq: int, state: RequestState) -> str:
        return f"{ROOT}{rid}/events/{seq:06d}-{state.value}.json"

    def _check_id(self, request_id: str) -> str:
        if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id) or len(request_id) > 200:
            raise RequestError(f"{request_id!r} is not a valid request id")
        return request_id

    # -- adding ----------------------------------------------------------------------------------
    def add(self, paths: list[str | Path], dataset: Dataset | None = None) -> list[str]:
        """Validate request files and record every request as pending; all or nothing.

        Each request is checked for form, and with ``dataset`` also against the data (alone, so the
        error names it). An id already in the store is refused, naming its state. Nothing is
        written unless every request passes. Returns the ids added, in file order.
        """
        loaded = load_requests(paths)
        if dataset is not None:
            for src, req in loaded:
                resolve_forget_set([(src, req)], dataset)
        for src, req in loaded:
            if self.store.exists(self._request_key(req.request_id)):
                state = self._state_word(req.request_id)
                raise RequestError(
                    f"{src}: request {req.request_id!r}: request id already in {self.store.uri} "
                    f"(state {state}); nothing was added"
                )
        self.initialise()
        written: list[str] = []
        try:
            for src, req in loaded:
                rid = req.request_id
                try:
                    self.store.put_bytes(
                        self._request_key(rid),
                        canonical_json(req.model_dump(mode="json", exclude=_unset_optional(req))),
                        exclusive=True,
                    )
                except AlreadyExists:
                    raise RequestError(
                        f"{src}: request {rid!r}: request id was added to {self.store.uri} at the same "
                        "time by someone else; nothing was added"
                    ) from None
                written.append(rid)
                self._put_event(rid, 0, RequestState.PENDING, None, "received")
        except BaseException:
            try:
                for rid in written:  # undo: the requests this call created are its own to remove
                    for key in self.store.list(f"{ROOT}{rid}/"):
                        self.store.delete(key)
            except RfauError:
                pass  # the store failed; the original error says why
            raise
        return [req.request_id for _, req in loaded]

    def _state_word(self, rid: str) -> str:
        try:
            return self.get(rid).state.value
        except RfauError:
            return "unknown"

    # -- reading ---------------------------------------------------------------------------------
    def get(self, request_id: str) -> RequestStatus:
        rid = self._check_id(request_id)
        keys = self.store.list(f"{ROOT}{rid}/")
        status = self._status(rid, keys) if self._request_key(rid) in keys else None
        if status is None:
            raise UnknownRequestError(f"request {rid!r} is not in {self.store.uri}")
        return status

    def list(self, state: RequestState | None = None) -> list[RequestStatus]:
        """Every request (or those in ``state``), oldest ``received_at`` first, then by id."""
        by_id: dict[str, list[str]] = {}
        for key in self.store.list(ROOT):
            rid = key[len(ROOT) :].split("/", 1)[0]
            by_id.setdefault(rid, []).append(key)
        out = []
        for rid, keys in by_id.items():
            if self._request_key(rid) not in keys:
                continue  # an add that is still being written (or was undone)
            try:
                status = self._status(rid, keys)
            except CorruptPendingRequest as e:  # never claimed: left alone (and said) until repaired
                self.corrupt.append(str(e))
                continue
            if status is None:
                continue
            if state is None or status.state == RequestState(state):
                out.append(status)
        out.sort(key=lambda s: (_received_key(s.request), s.request_id))
        return out

    def requests(self, state: RequestState) -> list[DeletionRequest]:
        return [s.request for s in self.list(state)]

    def _status(self, rid: str, keys: list[str]) -> RequestStatus | None:
        try:
            raw = self.store.get_bytes(self._request_key(rid))
            request = DeletionRequest.model_validate_json(raw)
        except NotFound:
            return None  # removed since it was listed (an add being undone)
        except ValueError as e:
            raise _corrupt(rid, self.store.where(self._request_key(rid)), e, keys) from None
        events: dict[int, tuple[str, RequestState]] = {}
        prefix = f"{ROOT}{rid}/events/"
        for key in sorted(keys):
            m = _EVENT.match(key[len(prefix) :]) if key.startswith(prefix) else None
            if not m:
                continue
            try:
                st = RequestState(m.group(2))
            except ValueError:
                continue
            events.setdefault(int(m.group(1)), (key, st))  # first by name wins a (rare) tie
        history = []
        for seq in sorted(events):
            key, st = events[seq]
            try:
                ev = json.loads(self.store.get_bytes(key))
            except NotFound:
                continue  # a losing duplicate being removed
            except ValueError as e:
                raise RequestError(f"{self.store.where(key)}: corrupt event: {e}") from None
            history.append(
                {
                    "seq": seq,
                    "state": st.value,
                    "at": ev.get("at", ""),
                    "batch_id": ev.get("batch_id"),
                    "detail": ev.get("detail", ""),
                }
            )
        if not history:  # request.json written, first event not yet: it is pending
            history.append(
                {
                    "seq": 0,
                    "state": RequestState.PENDING.value,
                    "at": _received_key(request).isoformat(),
                    "batch_id": None,
                    "detail": "received",
                }
            )
        last = history[-1]
        return RequestStatus(
            request_id=rid,
            state=RequestState(last["state"]),
            updated_at=last["at"],
            batch_id=last["batch_id"],
            detail=last["detail"],
            request=request,
            history=history,
        )

    # -- changing state --------------------------------------------------------------------------
    def _put_event(self, rid: str, seq: int, state: RequestState, batch_id: str | None, detail: str) -> None:
        body = {"state": state.value, "at": _now(), "batch_id": batch_id, "detail": detail}
        key = self._event_key(rid, seq, state)
        self.store.put_bytes(key, canonical_json(body), exclusive=True)  # AlreadyExists: lost the race
        rivals = self.store.list(f"{ROOT}{rid}/events/{seq:06d}-")
        if len(rivals) > 1 and rivals[0] != key:
            self.store.delete(key)
            raise RequestError(
                f"request {rid!r}: a concurrent change ({rivals[0].rsplit('/', 1)[-1]}) "
                f"won over {state.value} for batch {batch_id!r}"
            )

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

    # -- the store's lock --------------------------------------------------------------------------
    @contextmanager
    def locked(self, holder: str) -> Iterator[None]:
        """Hold the store's lock (waits up to LOCK_WAIT_S; a lock older than LOCK_STALE_S is a
        dead holder's and is broken)."""
        body = canonical_json({"holder": holder, "at": _now(), "pid": os.getpid()})
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                self.store.put_bytes(LOCK, body, exclusive=True)
                break
            except AlreadyExists:
                try:
                    info = json.loads(self.store.get_bytes(LOCK))
                    age = (datetime.now(UTC) - datetime.fromisoformat(info["at"])).total_seconds()
                except NotFound:
                    continue
                except (ValueError, KeyError, TypeError):
                    info, age = {}, LOCK_STALE_S + 1
                if age > LOCK_STALE_S:
                    with suppress(NotFound):
                        self.store.delete(LOCK)
                    continue
                if time.monotonic() > deadline:
                    raise RfauError(
                        f"request store {self.store.uri} is locked by {info.get('holder')!r} since "
                        f"{info.get('at')}; try again"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            with suppress(RfauError):
                self.store.delete(LOCK)

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

    def release_stale(self, older_than_hours: float | None = None) -> list[RequestStatus]:
        """Release every request in-progress for longer than the window; returns those released."""
        out = []
        for st in self.stale_in_progress(older_than_hours):
            try:
                out.append(self.operator_release(st.request_id, f"in-progress since {st.updated_at} (stale)"))
            except RequestError:
                continue  # its batch moved it meanwhile
        return out

    def release_all(self, ids: list[str], batch_id: str, cause: BaseException | str) -> None:
        """Put a failed batch's requests back; if that fails too, raise naming both failures."""
        failed = []
        for rid in ids:
            try:
                self.release(rid, batch_id, f"batch {batch_id} failed: {cause}"[:500])
            except Exception as e:  # disk full, store down: the original cause must not be lost
                failed.append(f"{rid}: {e}")
        if failed:
            raise RfauError(
                f"batch {batch_id} failed ({cause}) and releasing its requests failed too "
                f"({'; '.join(failed)[:500]}); they stay in-progress until 'rfau request release --stale'"
            )


def default_store(settings: TrackingSettings | None = None) -> str:
    """Where requests and the ledger's object-store copy live: $RFAU_REQUEST_STORE (a folder or
    s3://bucket/prefix), else a folder in the local state directory."""
    from rfau.tracking.settings import TrackingSettings

    settings = settings or TrackingSettings.from_env()
    return os.environ.get("RFAU_REQUEST_STORE") or str(settings.state_dir / "store")
