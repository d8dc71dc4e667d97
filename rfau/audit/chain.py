"""The ledger's bytes: one canonical JSON line per record, chained by hashes.

Each line is the record's canonical JSON (``canonical``: sorted keys, no spaces, ASCII only), so
the file's bytes are a function of its parsed records and any edited byte, re-indentation or key
reordering shows. Each record carries four keys the ledger adds (``RESERVED``):

- ``seq``: 1, 2, 3, ... (consecutive, 1-based position in the file);
- ``prev_hash``: the previous record's ``hash`` (``GENESIS``, 64 zeros, for the first);
- ``recorded_at``: UTC ISO-8601 time of the append, never earlier than the previous record's;
- ``hash``: sha256 hex of the record's canonical JSON without the ``hash`` key (``record_hash``).

Editing a record breaks its hash; re-hashing it breaks the next record's ``prev_hash``; removing,
inserting, duplicating or reordering records breaks ``seq`` and the chain. Rewriting the whole chain
from some point on (or cutting off its end) is consistent in itself, so ``verify_bytes`` also takes
*anchors*: ``{"seq", "hash"}`` pairs kept elsewhere (the model registry's version tags, the head of
the object-store copy); each must still be there, at that seq with that hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from rfau.errors import RfauError
from rfau.io import canonical_json

GENESIS = "0" * 64
RESERVED = ("seq", "prev_hash", "recorded_at", "hash")
MAX_PROBLEMS = 100  # verify_bytes reports at most this many, then a count of the rest
_HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical(record: dict) -> bytes:
    """The one byte form of a record: sorted keys, no whitespace, ASCII only."""
    return canonical_json(record, ascii_only=True)  # ASCII: the hashes of existing ledgers depend on it


def record_hash(record: dict) -> str:
    """sha256 hex of the record's canonical form without its ``hash`` key."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _parse_time(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def _split_lines(data: bytes) -> tuple[list[bytes], bool]:
    """Lines of a JSON Lines file and whether it ends with a newline (an empty file does)."""
    if not data:
        return [], True
    lines = data.split(b"\n")
    if lines[-1] == b"":
        return lines[:-1], True
    return lines, False


def _parse_line(line: bytes) -> tuple[dict | None, str | None]:
    """(record, None) or (None, what is wrong)."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError as e:
        return None, f"non-ASCII byte at column {e.start + 1}"
    try:
        obj = json.loads(text)
    except ValueError as e:
        return None, f"not valid JSON ({e})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    if not isinstance(obj, dict):
        return None, f"not a JSON object but {type(obj).__name__}"
    return obj, None


def parse_records(data: bytes, where: str = "ledger") -> list[dict]:
    """The records of a ledger's bytes, in order (not verified: see ``verify_bytes``)."""
    lines, _ = _split_lines(data)
    out = []
    for i, line in enumerate(lines):
        rec, err = _parse_line(line)
        if rec is None:
            raise RfauError(f"ledger {where}, line {i + 1}: {err}; run `rfau audit verify`")
        out.append(rec)
    return out


def verify_bytes(data: bytes, anchors: list[dict] | None = None) -> list[str]:
    """Problems found in a ledger's bytes, as human-readable lines; an empty list means intact.

    Checks that every line is the canonical form of its record, each record's hash, the
    ``prev_hash`` chain, ``seq`` = 1..n, ``recorded_at`` never going backwards, and each anchor
    (``{"seq": int, "hash": str}`` known from elsewhere) present at its seq with its hash."""
    problems: list[str] = []
    lines, newline_at_end = _split_lines(data)
    if not newline_at_end:
        problems.append(
            f"line {len(lines)}: the file does not end with a newline (cut-off or appended bytes)"
        )

    records: list[dict | None] = []
    prev_hash: str | None = GENESIS  # None: previous line unreadable, the link cannot be checked
    prev_time: datetime | None = None
    for i, line in enumerate(lines):
        n = i + 1
        rec, err = _parse_line(line)
        records.append(rec)
        if rec is None:
            problems.append(f"line {n}: {err}")
            prev_hash = None
            continue
        if canonical(rec) != line:
            problems.append(
                f"line {n}: bytes differ from the record's canonical JSON (edited, reformatted "
                "or keys reordered)"
            )
        seq = rec.get("seq")
        if type(seq) is not int:
            problems.append(f"line {n}: seq is missing or not an integer")
        elif seq != n:
            problems.append(
                f"line {n}: seq is {seq}, expected {n} (records removed, inserted, duplicated or reordered)"
            )
        stored = rec.get("hash")
        if not isinstance(stored, str) or not _HEX64.fullmatch(stored):
            problems.append(f"line {n}: hash is missing or not 64 lowercase hex digits")
        elif stored != record_hash(rec):
            problems.append(f"line {n}: hash does not match the record's content (record edited)")
        link = rec.get("prev_hash")
        if not isinstance(link, str) or not _HEX64.fullmatch(link):
            problems.append(f"line {n}: prev_hash is missing or not 64 lowercase hex digits")
        elif prev_hash is not None and link != prev_hash:
            what = "genesis" if n == 1 else f"line {n - 1}'s hash"
            problems.append(
                f"line {n}: prev_hash does not match {what} (chain broken: records removed, "
                "inserted, reordered or re-hashed)"
            )
        prev_hash = stored if isinstance(stored, str) else None
        t = _parse_time(rec.get("recorded_at"))
        if t is None:
            problems.append(f"line {n}: recorded_at is missing or not an ISO time with a time zone")
        else:
            if prev_time is not None and t < prev_time:
                problems.append(
                    f"line {n}: recorded_at {rec['recorded_at']} is earlier than the previous record's"
                )
            prev_time = t
        batch_id = rec.get("batch_id")
        if not isinstance(batch_id, str) or not batch_id:
            problems.append(f"line {n}: batch_id is missing or not a non-empty string")
        rids = rec.get("request_ids")
        if not isinstance(rids, list) or not all(isinstance(r, str) for r in rids):
            problems.append(f"line {n}: request_ids is missing or not a list of strings")

    for k, anchor in enumerate(anchors or []):
        seq = anchor.get("seq") if isinstance(anchor, dict) else None
        want = anchor.get("hash") if isinstance(anchor, dict) else None
        if type(seq) is not int or seq < 1 or not isinstance(want, str):
            problems.append(
                f"anchor {k + 1} is malformed ({anchor!r}): expected {{'seq': int >= 1, 'hash': str}}"
            )
        elif seq > len(records):
            problems.append(
                f"the ledger ends at seq {len(records)} but an anchor records seq {seq} "
                "(records cut off the end)"
            )
        elif (anchored := records[seq - 1]) is None:
            problems.append(f"anchor seq {seq}: line {seq} is unreadable")
        elif anchored.get("hash") != want:
            problems.append(
                f"anchor seq {seq}: hash {str(anchored.get('hash'))[:16]}... differs "
                f"from the anchored {want[:16]}... (history rewritten)"
            )

    if len(problems) > MAX_PROBLEMS:
        rest = len(problems) - MAX_PROBLEMS
        problems = problems[:MAX_PROBLEMS] + [f"... and {rest} more problems"]
    return problems


def verify(path: str | Path, anchors: list[dict] | None = None) -> list[str]:
    """``verify_bytes`` of the file at ``path``; a missing file is an empty ledger."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as e:
        return [f"cannot read {path}: {e}"]
    return verify_bytes(data, anchors)
