"""The parameters of a deletion batch (params.yaml, `rfau batch ... --params/--set`, the pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rfau.data.split import HOLDOUT_FRACTION
from rfau.errors import UsageError, validation_problems
from rfau.gates import Gates


class BatchParams(BaseModel):
    """The knobs of a batch, as in params.yaml (the pipeline's parameters)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = "digits"
    store: str | None = None  # request store: a folder or s3://bucket/prefix (default: $RFAU_REQUEST_STORE)
    method: str = "rfau"
    method_config: dict = Field(default_factory=dict)
    gates: Gates = Field(default_factory=Gates)
    train: dict = Field(default_factory=dict)  # the bootstrap original's recipe (first batch only)
    holdout_fraction: float = HOLDOUT_FRACTION


def parse_overrides(config: Path | None, sets: list[str] | None) -> dict:
    """A JSON config file plus KEY=VALUE overrides (values parsed as JSON when they parse)."""
    cfg: dict = {}
    if config:
        try:
            cfg = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read config {config}: {e}") from None
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            cfg[key] = json.loads(value)
        except json.JSONDecodeError:
            cfg[key] = value
    return cfg


def check_method(p: BatchParams) -> None:
    """Fail before a batch claims anything: an unknown method or invalid settings."""
    from rfau.stages import method_config  # torch: only when parameters are checked

    method_config(p.method, p.method_config)


def load_params(path: Path | None, sets: list[str] | None = None, **overrides) -> BatchParams:
    """params.yaml (or none), then --set KEY=VALUE, then explicit options; method settings checked."""
    raw: dict = {}
    if path:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"cannot read parameters {path}: {e}") from None
        if not isinstance(raw, dict):
            raise UsageError(f"{path}: parameters must be a mapping")
    raw.update(parse_overrides(None, sets))
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        params = BatchParams(**raw)
    except ValidationError as e:
        raise UsageError(
            f"invalid batch parameters{f' in {path}' if path else ''}: {validation_problems(e)}"
        ) from None
    check_method(params)
    return params
