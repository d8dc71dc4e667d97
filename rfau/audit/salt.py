"""Where the ledger's salt may come from. A salt file is created once in the local state folder;
that is right on one machine, and wrong wherever the state folder does not survive (a pod's
ephemeral disk) or is not shared (several machines on one remote store): every batch would hash
its subjects with a new salt, and hashes would stop matching across batches without any error.
There the salt must be the shared secret $RFAU_AUDIT_SALT."""

from __future__ import annotations

import os

from rfau.errors import RfauError

SALT_ENV = "RFAU_AUDIT_SALT"


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
