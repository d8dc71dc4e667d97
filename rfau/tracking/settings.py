"""Where runs and models go: a local MLflow store by default, a tracking server by settings.

- ``RFAU_TRACKING_URI`` (or ``MLFLOW_TRACKING_URI``): e.g. ``http://mlflow:5000``. Unset: a local
  sqlite store under ``RFAU_STATE_DIR`` (default ``.rfau``), artifacts in its ``mlartifacts/``.
- S3 artifacts: with a tracking server started with ``--artifacts-destination s3://...`` the
  server proxies artifacts and holds the credentials; clients need none. For a direct S3
  artifact store set ``MLFLOW_S3_ENDPOINT_URL`` and the usual ``AWS_*`` variables (boto3).
Credentials are read by boto3 from the environment and never logged or written by rfau. A
``user:password@`` inside the tracking URI is moved into ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` and the clean URI is what MLflow and KFP task inputs see.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel

from rfau.errors import RfauError, UsageError

ACCEPTED_SCHEMES = ("http", "https", "sqlite", "file", "databricks", "postgresql", "mysql")
# the whole userinfo, whatever it holds: up to the last "@" before the next whitespace (a password
# with "/", "@" or ":" in it is not percent-encoded by everyone who types one)
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>\S*)@")
# schemes whose URIs name a path after an empty authority (sqlite:////abs/db): an "@" there is
# a path's, not a password's
_PATH_SCHEMES = ("sqlite", "file")


def _path_uri(scheme: str, rest: str) -> bool:
    return rest.startswith("/") and scheme.lower().split("+")[0] in _PATH_SCHEMES


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URI in it replaced by ``***@``."""

    def mask(m: re.Match) -> str:
        if _path_uri(m.group("scheme"), m.group("userinfo")):
            return m.group(0)
        return f"{m.group('scheme')}://***@"

    return _URI_CREDENTIALS.sub(mask, text)


def split_userinfo(uri: str) -> tuple[str | None, str]:
    """(``user:password`` or None, the URI without it). The userinfo runs to the last ``@`` of the
    URI, so a password holding ``/`` or ``@`` is taken whole (a path with an ``@`` in a tracking
    URI is not a thing, but for sqlite:/// and file:/// URIs, whose authority is empty)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest or _path_uri(scheme, rest):
        return None, uri
    userinfo, _, host = rest.rpartition("@")
    return userinfo, f"{scheme}://{host}"


def clean_tracking_uri(uri: str) -> str:
    """Validate ``uri``; move any ``user:password@`` into MLFLOW_TRACKING_USERNAME/PASSWORD.

    MLflow prints its URI in "View run ... at:" lines and KFP dumps task inputs, so a URI with
    credentials inside would leak them to logs; the environment is where MLflow reads them from.
    """
    userinfo, clean = split_userinfo(uri)
    try:
        parts = urlsplit(clean)
        hostname = parts.hostname
    except ValueError:  # e.g. a bracketed host that is no IPv6 address
        hostname, parts = None, urlsplit("")
    scheme = parts.scheme.split("+")[0]
    if scheme not in ACCEPTED_SCHEMES or (scheme in ("http", "https") and not hostname):
        raise UsageError(
            f"tracking URI {redact(uri)!r} is not valid: use one of {', '.join(ACCEPTED_SCHEMES)} "
            "(e.g. http://mlflow:5000 or sqlite:///path/mlflow.db)"
        )
    if userinfo is None:
        return uri
    user, colon, password = userinfo.partition(":")
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
    if colon:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return clean


class TrackingSettings(BaseModel):
    tracking_uri: str | None = None
    state_dir: Path = Path(".rfau")
    model_name: str = "rfau-model"
    experiment: str = "rfau"

    @classmethod
    def from_env(cls, **overrides) -> TrackingSettings:
        env = {
            "tracking_uri": os.environ.get("RFAU_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI"),
            "state_dir": os.environ.get("RFAU_STATE_DIR"),
            "model_name": os.environ.get("RFAU_MODEL_NAME"),
        }
        env.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**{k: v for k, v in env.items() if v is not None})
        settings.check_state_dir()
        return settings

    def check_state_dir(self) -> None:
        """The state folder (local registry, default request store) may not be a file: that is a
        misconfiguration, never an empty store."""
        if self.state_dir.exists() and not self.state_dir.is_dir():
            raise UsageError(
                f"state folder {str(self.state_dir)!r} (RFAU_STATE_DIR) is a file, not a folder; "
                "point RFAU_STATE_DIR at a folder"
            )

    def check(self) -> None:
        """Validate the settings without touching anything: a bad URI or state folder -> RfauError."""
        if self.tracking_uri:
            clean_tracking_uri(self.tracking_uri)
        self.check_state_dir()

    def uri(self) -> str:
        if self.tracking_uri:
            return clean_tracking_uri(self.tracking_uri)
        self.check_state_dir()
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RfauError(f"cannot create state folder {str(self.state_dir)!r}: {e.strerror}") from None
        return f"sqlite:///{self.state_dir.resolve() / 'mlflow.db'}"

    def registry_exists(self) -> bool:
        """Whether there is a registry to read: a tracking URI, or the local one already made
        (looking never creates it: ``uri`` would)."""
        return bool(self.tracking_uri) or (self.state_dir / "mlflow.db").is_file()

    def artifact_location(self) -> str | None:
        """A sqlite store (the default, or one named by URI as kfp.local's tasks get it):
        artifacts beside the database, never in the working folder. Server: the server decides."""
        uri = self.uri()
        if uri.startswith("sqlite:///"):
            return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
        return None

    def redacted_uri(self) -> str:
        """The tracking URI without any user:password part, for logs and errors (whatever the
        password holds, and whether or not the URI is valid)."""
        if self.tracking_uri:
            userinfo, clean = split_userinfo(self.tracking_uri)
            return clean if userinfo is None else clean.replace("://", "://***@", 1)
        return redact(self.uri())
