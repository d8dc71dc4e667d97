"""Small file helpers: outputs appear completely or not at all, and never over a user's files.

The output rule, the same for every command's output path (``--out``, ``--workdir``, ``--root``):
a new path is created; an existing empty folder is used; a folder written by the same command
(its :data:`OUTPUT_MARKER` names the command) is replaced; anything else (a file, a folder with
other content, another command's output) is refused with a :class:`UsageError` before anything is
read, computed or touched. A single-file output (``evaluate --out x.json``) replaces only a file its
command recognises as its own, and none inside another command's output folder.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rfau.errors import RfauError, UsageError

OUTPUT_MARKER = ".rfau-output"
"""File every rfau output folder holds; its text names the command that wrote it (``split``,
``unlearn``, ``batch run`` ...). Folders of rfau before this rule hold ``output``: no command
replaces those (which command wrote them is not known)."""


def output_kind(folder: Path) -> str | None:
    """The command an rfau output folder records, or None when ``folder`` is not one."""
    marker = folder / OUTPUT_MARKER
    try:
        return marker.read_text().strip() if marker.is_file() else None
    except OSError:
        return None


def _os_problem(target: str | Path, what: str, e: OSError) -> RfauError:
    """An OSError on an output path as one line: a name too long is what the user typed."""
    shown = str(target) if len(str(target)) <= 120 else str(target)[:100] + "..."
    cls = UsageError if e.errno in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP) else RfauError
    return cls(f"{what} {shown!r}: {e.strerror or e}")


def _resolve(target: str | Path, what: str) -> Path:
    raw = Path(target)
    if raw.name in ("", ".", ".."):
        raise UsageError(f"{what} {str(target)!r} must name a new folder, not '.' or '..'")
    try:
        path = raw.resolve()
        path.exists()  # a name too long for the filesystem fails here, not halfway through
        return path
    except OSError as e:
        raise _os_problem(target, what, e) from None


def claim_output(target: str | Path, command: str, own: Callable[[Path], bool] | None = None) -> Path:
    """Check the output folder ``target`` of ``rfau COMMAND`` by the output rule (module
    docstring) and return it resolved; nothing is created or changed. ``own``: also recognises a
    folder this command wrote before it left markers (e.g. ``bench.json`` in a bench folder)."""
    what = "output folder"
    path = _resolve(target, what)
    try:
        if path.exists() and not path.is_dir():
            raise UsageError(
                f"{what} {str(target)!r} is a file; give a new or empty folder (nothing was changed)"
            )
        if not path.is_dir() or not any(path.iterdir()):
            return path
        found = output_kind(path)
        if found == command or (found is None and own is not None and own(path)):
            return path
    except OSError as e:
        raise _os_problem(target, what, e) from None
    if found is None:
        what_it_is = "is not an rfau output"
    elif found == "output":
        what_it_is = "is an output of an older rfau, which no command replaces"
    else:
        what_it_is = f"was written by `rfau {found}`, not `rfau {command}`"
    raise UsageError(
        f"{what} {str(target)!r} is not empty and {what_it_is}; give a new or empty folder "
        "(nothing was changed)"
    )


def _output_folder_above(path: Path) -> tuple[Path, str] | None:
    for parent in path.parents:
        found = output_kind(parent)
        if found is not None:
            return parent, found
    return None


def claim_output_file(target: str | Path, command: str, own: Callable[[Path], bool]) -> Path:
    """Check the single output file ``target`` of ``rfau COMMAND``: a new file, or one ``own``
    recognises as this command's (and not inside another command's output folder); return it
    resolved. Nothing is created or changed."""
    what = "output file"
    path = _resolve(target, what)
    try:
        if path.is_dir():
            raise UsageError(f"{what} {str(target)!r} is a folder; give a file path (nothing was changed)")
        if not path.exists():
            return path
        above = _output_folder_above(path)
        if above is not None and above[1] != command:
            raise UsageError(
                f"{what} {str(target)!r} is inside {str(above[0])!r}, an output of `rfau {above[1]}`; "
                "give another path (nothing was changed)"
            )
        if own(path):
            return path
    except OSError as e:
        raise _os_problem(target, what, e) from None
    raise UsageError(
        f"{what} {str(target)!r} exists and was not written by `rfau {command}`; give a new path "
        "(nothing was changed)"
    )


def _mkdtemp(parent: Path, name: str) -> Path:
    """A hidden temporary sibling, named so that it fits wherever ``name`` fits."""
    return Path(tempfile.mkdtemp(prefix=f".{name[:40]}.", suffix=".rfau-tmp", dir=parent))


@contextmanager
def atomic_dir(target: str | Path, command: str) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target``, on error it vanishes.

    ``target`` is checked by :func:`claim_output` first; the finished folder names ``command`` in
    :data:`OUTPUT_MARKER` so a later run of that command knows it may replace it.
    """
    target = claim_output(target, command)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _mkdtemp(target.parent, target.name)
    except OSError as e:
        raise _os_problem(target, "cannot write output folder", e) from None
    try:
        yield tmp
        (tmp / OUTPUT_MARKER).write_text(command + "\n")
        claim_output(target, command)  # still ours (or absent) at the moment it is replaced
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, target: Path) -> None:
    if not target.exists():
        tmp.rename(target)
        return
    old = _mkdtemp(target.parent, target.name)  # its own name: never a user's `.name.old`
    target.rename(old)  # rename(2) replaces an empty folder
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def reuse_dir(target: str | Path, command: str, own: Callable[[Path], bool] | None = None) -> Path:
    """An output folder that a command adds to rather than replaces (a batch's work folder, a
    pipeline root, a bench folder): checked by :func:`claim_output`, created, and marked."""
    path = claim_output(target, command, own)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if output_kind(path) is None:
            (path / OUTPUT_MARKER).write_text(command + "\n")
    except OSError as e:
        raise _os_problem(target, "cannot write output folder", e) from None
    return path


@contextmanager
def fresh_dir(target: str | Path, command: str, own: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """A folder a command fills in place (paths inside it are recorded, so it cannot be built
    elsewhere and renamed): an earlier output of ``command`` is moved aside, the block fills a new
    folder, and on success the old one is removed; on error the new one is removed and the old
    one put back. ``own``: as for :func:`claim_output`."""
    path = claim_output(target, command, own)
    old = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            old = _mkdtemp(path.parent, path.name)
            path.rename(old)
        path.mkdir()
        (path / OUTPUT_MARKER).write_text(command + "\n")
    except OSError as e:
        if old is not None and not path.exists():
            old.rename(path)
        raise _os_problem(target, "cannot write output folder", e) from None
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        if old is not None:
            old.rename(path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``path`` atomically through a uniquely named temporary file beside it (removed on
    any failure): a reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".rfau-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


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
