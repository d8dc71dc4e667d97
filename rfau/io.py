"""Small file helpers: outputs appear completely or not at all."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rfau.errors import RfauError, UsageError

OUTPUT_MARKER = ".rfau-output"
"""File every rfau output folder holds; its text is the folder's kind (``split``, ``unlearn`` ...)."""


def output_kind(folder: Path) -> str | None:
    """The kind an rfau output folder records, or None when ``folder`` is not one."""
    marker = folder / OUTPUT_MARKER
    return marker.read_text().strip() if marker.is_file() else None


def prepare_out(target: str | Path, kind: str | None = None, force: bool = False) -> Path:
    """Resolve ``target`` and refuse to overwrite anything that is not an rfau output of ``kind``.

    An empty or absent folder is fine; a folder holding the marker of the same kind (any kind when
    ``kind`` is None) is replaced; anything else needs ``force``. Files are always refused.
    """
    raw = Path(target)
    if raw.name in ("", ".", ".."):
        raise UsageError(f"output folder {str(target)!r} must name a new folder, not '.' or '..'")
    path = raw.resolve()
    if path.exists() and not path.is_dir():
        raise UsageError(f"output folder {str(target)!r} is a file; give a folder path")
    if path.is_dir() and any(path.iterdir()) and not force:
        found = output_kind(path)
        if found is None or (kind is not None and found != kind):
            what = "not an rfau output" if found is None else f"an rfau {found!r} output"
            raise UsageError(
                f"output folder {str(target)!r} is not empty and is {what}; "
                "choose another folder or pass --force to replace it"
            )
    return path


@contextmanager
def atomic_dir(target: str | Path, kind: str | None = None, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target``, on error it vanishes.

    ``target`` is checked by :func:`prepare_out` first; the finished folder records ``kind``
    in :data:`OUTPUT_MARKER` so a later run knows it may replace it.
    """
    target = prepare_out(target, kind, force)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except PermissionError as e:
        raise RfauError(f"cannot write output folder {str(target)!r}: {e.strerror}") from e
    try:
        yield tmp
        (tmp / OUTPUT_MARKER).write_text((kind or "output") + "\n")
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, target: Path) -> None:
    if not target.exists():
        tmp.rename(target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def work_lock(folder: str | Path, holder: str = "") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the block; a second holder gets an RfauError.

    fcntl.flock is released by the OS when the process exits or dies, so a crash never leaves a
    stale lock; the file's text (pid, holder, start time) only names the holder in the message.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".rfau-lock"
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            raise RfauError(
                f"work folder {str(folder)!r} is in use by {who}; wait for it or use another folder"
            ) from None
        f.seek(0)
        f.truncate()
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} {holder} since {stamp}".replace("  ", " "))
        f.flush()
        yield path
    finally:
        f.close()


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def canonical_json(obj, *, ascii_only: bool = False) -> bytes:
    """The one byte form of a JSON value: sorted keys, no whitespace, UTF-8.

    ``ascii_only=True`` escapes non-ASCII characters (``\\u00e9``). The audit ledger uses it because
    the hashes of records already written were computed over that form; stores of new data use
    plain UTF-8. Both forms are unique per value, so either can be re-checked byte for byte.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only).encode("utf-8")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path) -> str:
    return _file_digest(path, hashlib.sha256())


def md5_file(path: str | Path) -> str:
    """The md5 DVC records for a file output (DVC 3 hashes the raw bytes)."""
    return _file_digest(path, hashlib.md5())


def _file_digest(path: str | Path, h) -> str:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
