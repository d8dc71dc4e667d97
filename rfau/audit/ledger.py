"""The deletion ledger: an append-only, hash-chained, tamper-evident JSON Lines file.

One line per deletion batch. The bytes, the four keys the ledger adds (``seq``, ``prev_hash``,
``recorded_at``, ``hash``) and their verification: ``rfau.audit.chain``. The salt and the subject
hashes: ``rfau.audit.salt``. This module appends records to a file.

Fields supplied by the caller (the ledger requires only ``batch_id`` and ``request_ids``):

- ``batch_id`` (str): the deletion batch;
- ``request_ids`` (list of str): the deletion requests the batch honours;
- ``subject_hashes`` ({request_id: str}): ``subject_hash`` of each request's data subject (salted
  HMAC; subjects are never stored in clear);
- ``forget_md5`` (str): DVC md5 of the batch's ``forget.txt``; ``forget_count`` (int): its size;
  ``forget_classes`` (list of int): classes forgotten whole (class-wise regime), else empty;
- ``dataset`` (str);
- ``model``: ``{"name", "before": {"version", "weights_sha256"}, "after": {"version", "weights_sha256"}}``:
  the version that had the data and the version the batch produced (it fulfils the requests
  only when promoted with its gates passed);
- ``promoted`` (bool): whether ``after`` became champion; ``champion_after`` (int): champion version
  after the batch; ``held_back`` (str, optional): why a version that passed its gates was not
  promoted (the champion was no longer the batch's ``before`` version);
- ``method`` (str) and ``config`` (dict): the unlearning method and its settings;
- ``metrics`` (dict, percent): ``ua``, ``ra``, ``ta``, ``ta_kept_classes``, ``mia_confidence``,
  ``mia_confidence_test``, ...; ``baseline_metrics`` (dict): the previous champion on the same split;
- ``gates`` (list of ``{"name", "passed", "value", "bound", "detail"}``; evidence gates add ``n``,
  ``detectable`` (rfau.power) and ``measurable``: False, value null, where too few samples measure
  it) and ``gates_passed`` (bool);
- ``evidence`` ({filename: sha256}): files kept in the batch's evidence folder (e.g.
  ``confidence_hist.png``, ``metrics.json``);
- ``code_version``, ``started_at``, ``finished_at`` (UTC ISO), ``mlflow_run_id`` (str).

Fields must be JSON values (dicts with str keys, lists, str, int, float, bool, None).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rfau.audit.chain import (
    GENESIS,
    MAX_PROBLEMS,
    RESERVED,
    _iso,
    _parse_time,
    _split_lines,
    canonical,
    parse_records,
    record_hash,
    verify,
    verify_bytes,
)
from rfau.audit.salt import SALT_BYTES, fsync_dir, load_or_create_salt, subject_hash
from rfau.errors import RfauError

__all__ = [
    "GENESIS",
    "MAX_PROBLEMS",
    "RESERVED",
    "SALT_BYTES",
    "Ledger",
    "canonical",
    "load_or_create_salt",
    "parse_records",
    "record_hash",
    "subject_hash",
    "verify",
    "verify_bytes",
]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on a sibling lock file, so concurrent appends do not lose records."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class Ledger:
    """A deletion ledger file (JSON Lines, one record per deletion batch)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as e:
            raise RfauError(f"cannot read the ledger {self.path}: {e}") from e

    def records(self) -> list[dict]:
        """The parsed records, in order (not verified: see ``verify``)."""
        return parse_records(self._read(), str(self.path))

    def head(self) -> dict | None:
        """``{"seq", "hash"}`` of the last record (the anchor to keep elsewhere), or None when empty."""
        recs = self.records()
        if not recs:
            return None
        return {"seq": recs[-1].get("seq"), "hash": recs[-1].get("hash")}

    def find(self, request_id: str) -> list[dict]:
        """The records whose ``request_ids`` contain ``request_id``."""
        return [
            r
            for r in self.records()
            if isinstance(r.get("request_ids"), list) and request_id in r["request_ids"]
        ]

    def append(self, fields: dict, now: datetime | None = None) -> dict:
        """Append one record and return it as stored. Refuses when the ledger fails verification.

        The whole new content goes to a temp file in the same folder, is fsynced and renamed over
        the ledger: a crash leaves the old ledger or the new one, never a half line."""
        _check_fields(fields)
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None:
            raise RfauError("ledger append: `now` must be time-zone aware (UTC)")
        with _locked(self.path):
            data = self._read()
            problems = verify_bytes(data)
            if problems:
                shown = "\n  ".join(problems[:10])
                raise RfauError(f"refusing to append to {self.path}: it fails verification:\n  {shown}")
            lines, _ = _split_lines(data)
            last = json.loads(lines[-1]) if lines else None
            recorded_at = _iso(now)
            ours = _parse_time(recorded_at)
            theirs = _parse_time(last["recorded_at"]) if last is not None else None
            if last is not None and ours is not None and theirs is not None and ours < theirs:
                recorded_at = last["recorded_at"]  # clock went backwards: keep the order
            record = {
                **fields,
                "seq": len(lines) + 1,
                "prev_hash": last["hash"] if last else GENESIS,
                "recorded_at": recorded_at,
            }
            try:
                record = json.loads(canonical(record))  # exactly what records() will read back
            except (TypeError, ValueError) as e:
                raise RfauError(f"ledger fields must be JSON values: {e}") from e
            record["hash"] = record_hash(record)
            self._write(data + canonical(record) + b"\n")
        return record

    def _write(self, content: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)


def _check_fields(fields: dict) -> None:
    if not isinstance(fields, dict):
        raise RfauError(f"ledger fields must be a dict, not {type(fields).__name__}")
    reserved = sorted(set(fields) & set(RESERVED))
    if reserved:
        raise RfauError(f"ledger fields may not set {', '.join(reserved)}: the ledger adds them")
    bad_keys = [k for k in fields if not isinstance(k, str)]
    if bad_keys:
        raise RfauError(f"ledger field names must be strings, not {bad_keys!r}")
    if not isinstance(fields.get("batch_id"), str) or not fields["batch_id"]:
        raise RfauError("ledger record needs a non-empty string batch_id")
    rids = fields.get("request_ids")
    if not isinstance(rids, list | tuple) or not all(isinstance(r, str) for r in rids):
        raise RfauError("ledger record needs request_ids, a list of strings")
