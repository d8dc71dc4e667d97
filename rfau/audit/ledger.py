"""The deletion ledger: an append-only, hash-chained, tamper-evident JSON Lines file.

One line per deletion batch. Each line is the record's canonical JSON (``canonical``: sorted keys, no
spaces, ASCII only), so the file's bytes are a function of its parsed records and any edited byte,
re-indentation or key reordering shows. Each record carries four keys the ledger adds:

- ``seq``: 1, 2, 3, ... (consecutive, 1-based position in the file);
- ``prev_hash``: the previous record's ``hash`` (``GENESIS``, 64 zeros, for the first);
- ``recorded_at``: UTC ISO-8601 time of the append, never earlier than the previous record's;
- ``hash``: sha256 hex of the record's canonical JSON without the ``hash`` key (``record_hash``).

Editing a record breaks its hash; re-hashing it breaks the next record's ``prev_hash``; removing,
inserting, duplicating or reordering records breaks ``seq`` and the chain. Rewriting the whole chain
from some point on (or cutting off its end) is consistent in itself, so ``verify_bytes`` also takes
*anchors*: ``{"seq", "hash"}`` pairs kept elsewhere (the model registry's version tags, the head of
the object-store copy); each must still be there, at that seq with that hash.

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

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rfau.errors import RfauError
from rfau.io import canonical_json

GENESIS = "0" * 64
RESERVED = ("seq", "prev_hash", "recorded_at", "hash")
SALT_BYTES = 32
MAX_PROBLEMS = 100  # verify_bytes reports at most this many, then a count of the rest
_HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical(record: dict) -> bytes:
    """The one byte form of a record: sorted keys, no whitespace, ASCII only."""
    return canonical_json(record, ascii_only=True)  # ASCII: the hashes of existing ledgers depend on it


def record_hash(record: dict) -> str:
    """sha256 hex of the record's canonical form without its ``hash`` key."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def subject_hash(subject: str, salt: bytes) -> str:
    """Salted hash (HMAC-SHA256 hex) of a data subject or request id; the ledger never stores
    them in clear."""
    if not isinstance(salt, bytes | bytearray) or not salt:
        raise RfauError("subject_hash needs a non-empty salt (see load_or_create_salt)")
    return hmac.new(bytes(salt), str(subject).encode("utf-8"), hashlib.sha256).hexdigest()


def load_or_create_salt(path: str | Path) -> bytes:
    """The ledger's secret salt: 32 random bytes in ``path`` (mode 0600), created once, reused after.

    Creation is atomic and never overwrites: the bytes go to a private temp file that is then
    hard-linked into place, so concurrent callers all end up with the same salt."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, secrets.token_bytes(SALT_BYTES))
            os.fsync(fd)
            os.close(fd)
            fd = -1
            try:
                os.link(tmp, path)  # fails if another process created it meanwhile: theirs wins
            except FileExistsError:
                pass
            except OSError:  # file system without hard links
                if not path.exists():
                    os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            if fd >= 0:
                os.close(fd)
            Path(tmp).unlink(missing_ok=True)
    try:
        salt = path.read_bytes()
    except OSError as e:
        raise RfauError(f"cannot read the ledger salt {path}: {e}") from e
    if len(salt) != SALT_BYTES:
        raise RfauError(
            f"ledger salt {path} has {len(salt)} bytes, expected {SALT_BYTES}: "
            "it was truncated or replaced; restore it from backup"
        )
    return salt


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        elif records[seq - 1] is None:
            problems.append(f"anchor seq {seq}: line {seq} is unreadable")
        elif records[seq - 1].get("hash") != want:
            problems.append(
                f"anchor seq {seq}: hash {str(records[seq - 1].get('hash'))[:16]}... differs "
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
            if last is not None and _parse_time(recorded_at) < _parse_time(last["recorded_at"]):
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
        _fsync_dir(self.path.parent)


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
