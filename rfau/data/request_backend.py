"""Where deletion requests and their events live: a Store (local folder or S3) shared by every
worker. ``rfau.data.request_store`` builds the legal moves on top of this.

Layout under the store root::

    requests/<request_id>/request.json                 the validated request (canonical JSON)
    requests/<request_id>/events/<NNNNNN>-<state>.json {"state", "at", "batch_id", "detail"}

Nothing is ever rewritten: every state change is one more event object, created with an
exclusive (create-only) write at the next sequence number, so the change is atomic and two workers
racing for the same transition cannot both win -- the loser's create fails and it moves on.
A request's state is its last event's. ``000000-pending`` is written by ``add``.

``store.json`` at the root marks an initialised store (written by ``add``); batch runs open the
store with ``open(uri, create=False)`` so a mistyped folder or prefix is an error, not "nothing to do".

Two different events at one sequence number can only come from one batch making two moves on one
request at once; the first by name wins and the other writer gets a RequestError (its event is
removed). The store's lock (``locked``: an object created exclusively, ``locks/requests.lock``)
serialises the operator's moves with a batch's last check of its claims.
"""

from __future__ import annotations

import builtins
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self

from rfau.data.request_events import (
    _EVENT,
    _REQUEST_ID,
    LOCK,
    LOCK_STALE_S,
    LOCK_WAIT_S,
    MARKER,
    ROOT,
    CorruptPendingRequest,
    RequestState,
    RequestStatus,
    _corrupt,
    _now,
    _received_key,
    _unset_optional,
)
from rfau.data.requests import DeletionRequest, load_requests, resolve_forget_set
from rfau.errors import RequestError, RfauError, UnknownRequestError, UsageError
from rfau.io import canonical_json
from rfau.storage import AlreadyExists, NotFound, Store, open_store

if TYPE_CHECKING:  # torch: imported only where a dataset is loaded
    from rfau.data.base import Dataset


class StoredRequests:
    """Deletion requests and their events in a Store: reading, adding, one event at a time, the
    lock. Safe to share between concurrent workers."""

    def __init__(self, store: Store):
        self.store = store
        self.corrupt: list[str] = []  # why each corrupt pending request was left out of list()

    @classmethod
    def from_uri(cls, uri: str | Path) -> Self:
        return cls(open_store(uri))

    @classmethod
    def open(cls, uri: str | Path, create: bool = False) -> Self:
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
        return f"{type(self).__name__}({self.store.uri!r})"

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

    def requests(self, state: RequestState) -> builtins.list[DeletionRequest]:
        return [s.request for s in self.list(state)]

    def _status(self, rid: str, keys: builtins.list[str]) -> RequestStatus | None:
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

    # -- writing one event -------------------------------------------------------------------------
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
