"""Where runs and models go: a local MLflow store by default, a tracking server by settings.

- ``RFAU_TRACKING_URI`` (or ``MLFLOW_TRACKING_URI``): e.g. ``http://mlflow:5000``. Unset: a local
  sqlite store under ``RFAU_STATE_DIR`` (default ``.rfau``), artifacts in its ``mlartifacts/``.
- S3 artifacts: with a tracking server started with ``--artifacts-destination s3://...`` the
  server proxies artifacts and holds the credentials; clients need none. For a direct S3
  artifact store set ``MLFLOW_S3_ENDPOINT_URL`` and the usual ``AWS_*`` variables (boto3).
Credentials are read by boto3 from the environment and never logged or written by rfau.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel


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
        return cls(**{k: v for k, v in env.items() if v is not None})

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.state_dir.resolve() / 'mlflow.db'}"

    def artifact_location(self) -> str | None:
        """A sqlite store (the default, or one named by URI as kfp.local's tasks get it):
        artifacts beside the database, never in the working folder. Server: the server decides."""
        uri = self.uri()
        if uri.startswith("sqlite:///"):
            return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
        return None

    def redacted_uri(self) -> str:
        """The tracking URI without any user:password part, for logs and errors."""
        uri = self.uri()
        if "@" in uri and "://" in uri:
            scheme, rest = uri.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return uri
