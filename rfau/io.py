"""Small file helpers: outputs appear completely or not at all."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target``, on error it vanishes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)


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
