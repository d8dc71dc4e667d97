"""What ``audit verify`` checks beyond the chain: the request states against the ledger records,
the evidence files against the hashes in their record, the deletion frontier of every served
alias, and a promotion the ledger records that the registry does not show yet."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rfau.audit.kinds import ALREADY_FORGOTTEN, HELD_ALIASES_OK, held_requests
from rfau.storage import NotFound, Store
from rfau.tracking.registry import frontier_of
from rfau.tracking.tags import VersionTags


def _settles(record: dict) -> bool:
    """A record that fulfils the requests it names: a promoted batch, or nothing left to forget."""
    return bool(record.get("promoted")) or record.get("kind") == ALREADY_FORGOTTEN


def request_problems(records: list[dict], statuses: list) -> list[str]:
    """Each request's state against the ledger: a fulfilled request has exactly one record since
    it was last reopened that names it and settles it (its own batch's); a request in another
    state has none; its events are consecutive (none deleted); every named request exists."""
    problems = []
    known = {st.request_id for st in statuses}
    for r in records:
        for rid in [*r.get("request_ids", []), *r.get("reopened", [])]:
            if rid not in known:
                problems.append(
                    f"ledger record {r.get('seq')} names request {rid}, which is not in the store"
                )
    for st in statuses:
        rid, state = st.request_id, st.state.value
        seqs = [h["seq"] for h in st.history]
        if seqs != list(range(len(seqs))):
            problems.append(f"request {rid}: its events are {seqs}, not consecutive (an event was deleted)")
        reopened = [r["seq"] for r in records if rid in r.get("reopened", [])]
        since = max(reopened, default=0)
        settling = [
            r for r in records if r["seq"] > since and rid in r.get("request_ids", []) and _settles(r)
        ]
        if state == "fulfilled":
            if not settling:
                problems.append(
                    f"request {rid} is fulfilled but no ledger record fulfils it (a hand-written event?)"
                )
            elif len(settling) > 1:
                seqs_ = ", ".join(str(r["seq"]) for r in settling)
                problems.append(f"request {rid} is fulfilled by {len(settling)} ledger records ({seqs_})")
            elif settling[0].get("batch_id") != st.batch_id:
                problems.append(
                    f"request {rid} is fulfilled by batch {st.batch_id} but ledger record "
                    f"{settling[0]['seq']} is batch {settling[0].get('batch_id')}'s"
                )
        elif settling:
            r = settling[-1]
            interrupted = state == "in-progress" and st.batch_id == r.get("batch_id")
            problems.append(
                f"request {rid} is {state} but ledger record {r['seq']} fulfils it"
                + (" (an interrupted register: the next batch's recover settles it)" if interrupted else "")
            )
    return problems


def evidence_problems(record: dict, store: Store, local_dir: Path | None) -> list[str]:
    """The record's evidence files (object store, and the local copy where there is one) against
    the sha256 it recorded."""
    problems = []
    batch = record.get("batch_id")
    for name, want in sorted((record.get("evidence") or {}).items()):
        where = f"audit/evidence/{batch}/{name}"
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            problems.append(f"record {record.get('seq')}: evidence {name!r} is not a plain file name")
            continue
        try:
            got = hashlib.sha256(store.get_bytes(where)).hexdigest()
        except NotFound:
            problems.append(f"record {record.get('seq')}: evidence {store.where(where)} is missing")
            continue
        if got != want:
            problems.append(
                f"record {record.get('seq')}: evidence {store.where(where)} differs from its hash "
                "in the record (edited)"
            )
        local = local_dir / "evidence" / str(batch) / name if local_dir else None
        if local is not None and local.is_file() and hashlib.sha256(local.read_bytes()).hexdigest() != want:
            problems.append(
                f"record {record.get('seq')}: evidence {local} differs from its hash in the record (edited)"
            )
    return problems


def alias_problems(aliases: dict[str, str], tags: dict[int, dict], fulfilled: list[str]) -> list[str]:
    """Every served alias (all but ``previous`` and ``candidate``) no longer holds data of any
    fulfilled request (its deletion frontier covers them)."""

    problems = []
    for alias, version in sorted(aliases.items()):
        if alias in HELD_ALIASES_OK or int(version) not in tags:
            continue
        held = held_requests(fulfilled, frontier_of(tags, int(version)))
        if held:
            problems.append(
                f"alias {alias!r} (version {version}) holds data of fulfilled request(s) {', '.join(held)}"
            )
    return problems


def promotion_problems(records: list[dict], tags: dict[int, dict], champion: int | None) -> list[str]:
    """The ledger's latest promotion is what serves (unless rolled back by hand or deleted)."""
    promoted = [r for r in records if r.get("promoted") and (r.get("model") or {}).get("after")]
    if not promoted:
        return []
    last = promoted[-1]
    v = int(last["model"]["after"]["version"])
    if v == champion or v not in tags or tags[v].get(VersionTags.ROLLED_BACK) == "true":
        return []
    return [
        f"ledger record {last['seq']} promotes version {v} but version {champion} serves: the promotion "
        "is pending (an interrupted register or move; the next batch's recover completes it)"
    ]
