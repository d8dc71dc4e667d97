"""Operator moves of the champion alias (``rfau promote``, ``rfau rollback``) under the deletion
frontier: a version that still holds data of a fulfilled request is refused, naming the requests,
unless ``reopen``; then those requests go back to pending (a new batch forgets them from it) and
the ledger records the move. Where the store has a ledger, every move is recorded (``kind``
``champion-move``, its ``reopened`` requests), so the ledger's latest promotion is what serves and
``recover`` never moves the alias back behind an operator.
"""

from __future__ import annotations

import secrets
from contextlib import nullcontext
from datetime import UTC, datetime

import rfau
from rfau.audit.kinds import MOVE, held_requests
from rfau.audit.trail import AuditTrail
from rfau.data.request_store import RequestState, RequestStore
from rfau.errors import RfauError, UsageError
from rfau.records import ChampionMove
from rfau.tracking.registry import CHAMPION, PREVIOUS, Registry, VersionTags, frontier_of
from rfau.tracking.settings import TrackingSettings


def move_champion(
    settings: TrackingSettings,
    store_uri: str,
    version: int | None,
    reopen: bool = False,
    reason: str = "",
) -> ChampionMove:
    """Make ``version`` champion (None: give it back to ``previous``, a rollback)."""

    reg = Registry(settings)
    if version is None:
        prev = reg.alias_version(PREVIOUS)
        if prev is None:
            raise RfauError(f"model {reg.name!r} has no 'previous' version to roll back to")
        target = int(prev.version)
    else:
        target = int(reg.version(version).version)
    command = "promote" if version is not None else "rollback"
    tags = reg.version_tags()
    reqs = RequestStore.from_uri(store_uri)
    audited = reqs.initialised()  # a registry used without requests: nothing to check or record
    trail = AuditTrail.open(store_uri, settings)
    cur = reg.champion()
    record = None
    with reqs.locked(f"rfau {command}") if audited else nullcontext():
        fulfilled = [st.request_id for st in reqs.list(RequestState.FULFILLED)] if audited else []
        held = held_requests(fulfilled, frontier_of(tags, target))
        if held and not reopen:
            raise UsageError(
                f"version {target} still holds data of fulfilled request(s) {', '.join(held)}: refusing "
                f"to make it champion; `rfau {command} --reopen` re-queues them (pending, a new batch "
                "forgets them from it) and records the move in the ledger"
            )
        why = reason or f"rfau {command}"
        if held or (audited and trail.records()):
            now = datetime.now(UTC).isoformat()
            record = trail.append(
                {
                    "kind": MOVE,
                    "batch_id": f"move-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
                    "request_ids": [],
                    "reopened": held,
                    "model": {
                        "name": reg.name,
                        "before": cur.model_dump() if cur else None,
                        "after": {
                            "version": target,
                            "weights_sha256": tags[target].get(VersionTags.WEIGHTS, ""),
                        },
                    },
                    "promoted": True,
                    "champion_after": target,
                    "operator_command": command,
                    "reason": why,
                    "code_version": rfau.__version__,
                    "finished_at": now,
                }
            )
        for rid in held:
            reqs.operator_reopen(
                rid,
                f"{why}: the champion moved to version {target}, which holds its data "
                f"(ledger record {record['seq'] if record else '-'})",
            )
    # the record first (as a batch does): an interrupted move is completed by the next `recover`
    if version is None:
        reg.client.set_registered_model_alias(reg.name, CHAMPION, str(target))
        reg.client.delete_registered_model_alias(reg.name, PREVIOUS)
        if cur is not None and cur.version != target:
            reg.client.set_model_version_tag(reg.name, str(cur.version), VersionTags.ROLLED_BACK, "true")
    else:
        reg.move_champion(str(target))
        if tags[target].get(VersionTags.ROLLED_BACK):  # promoted again by hand: no longer rolled back
            reg.client.delete_model_version_tag(reg.name, str(target), VersionTags.ROLLED_BACK)
    return ChampionMove(
        model=reg.name,
        champion=target,
        rolled_back=cur.version if version is None and cur is not None else None,
        reopened=held,
        ledger_seq=record["seq"] if record else None,
    )
