"""Where the ledger's salt may come from. A salt file is created once in the local state folder;
that is right on one machine, and wrong wherever the state folder does not survive (a pod's
ephemeral disk) or is not shared (several machines on one remote store): every batch would hash
its subjects with a new salt, and hashes would stop matching across batches without any error.
There the salt must be the shared secret $RFAU_AUDIT_SALT.

Subjects are hashed with it (``subject_hash``, a salted HMAC): the ledger never stores them in
clear."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from rfau.errors import RfauError

SALT_ENV = "RFAU_AUDIT_SALT"
SALT_BYTES = 32


def local_salt_refused(store_uri: str) -> str | None:
    """Why a salt file in the local state folder must not be used here, or None where it may."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "this process runs in a Kubernetes pod (its state folder dies with the pod)"
    scheme = str(store_uri).partition("://")[0] if "://" in str(store_uri) else "file"
    if scheme != "file":
        return f"the audit store {store_uri} is remote (other machines append to the same ledger)"
    return None


def require_shared_salt(store_uri: str) -> None:
    """Raise when $RFAU_AUDIT_SALT is unset where a local salt file would silently differ."""
    why = local_salt_refused(store_uri)
    if why and not os.environ.get(SALT_ENV):
        raise RfauError(
            f"{SALT_ENV} is not set and {why}: a salt of its own would make subject hashes stop "
            f"matching across batches. Set {SALT_ENV} to the shared secret (on a cluster: the "
            f"rfau-audit secret, infra/k8s/secrets/rfau-audit.env.example)"
        )


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
            fsync_dir(path.parent)
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


def fsync_dir(folder: Path) -> None:
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
