"""The parameters of a deletion batch: ONE set, whose field names are the pipeline's parameter
names. params.yaml (read by dvc.yaml), `rfau batch ... --params/--set`, `rfau pipeline
run/submit/schedule --params/--set`, the KFP pipeline's signature and components, and
``rfau.batch.run_batch`` all use `BatchParams`; its defaults are written here only.

Where the registry lives (``RFAU_TRACKING_URI``) and the registered model's name
(``RFAU_MODEL_NAME``) are not batch parameters: they are the deployment's settings
(``rfau.tracking.settings.TrackingSettings``), shared by every command that reads the registry
(`rfau models`, `rfau audit verify`, `rfau promote`) and set on a cluster by the pods'
``rfau-config`` ConfigMap, so a committed params.yaml never pins a machine's port-forward.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from rfau.data.split import HOLDOUT_FRACTION
from rfau.errors import UsageError, validation_problems
from rfau.gates import Gates

# names that earlier versions (params files, the pipeline's parameters) used -> the name now
RENAMED = {"dataset_uri": "dataset", "requests_uri": "store", "train_config": "train"}
# earlier pipeline parameters that are tracking settings now -> the variable that sets them
MOVED_TO_SETTINGS = {"model_name": "RFAU_MODEL_NAME", "tracking_uri": "RFAU_TRACKING_URI"}


class Rung(BaseModel):
    """One rung of the escalation ladder: a method (`rfau methods`) and its settings."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)


EXACT = "retrain"  # the exact rung: retraining without the data, exact by construction


class BatchParams(BaseModel):
    """The knobs of a batch, as in params.yaml: the pipeline's parameters, by the same names."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("digits", description="'digits' (embedded) or an ImageFolder folder / .tar.gz")
    store: str = Field(
        "",
        description="request store and ledger: a folder or s3://bucket/prefix; "
        "'' (or null): $RFAU_REQUEST_STORE, else the state folder's store/",
    )
    method: str = Field("rfau", description="unlearning method (`rfau methods`)")
    method_config: dict[str, Any] = Field(default_factory=dict, description="the method's settings")
    gates: Gates = Field(default_factory=Gates, description="promotion gates (rfau/gates.py)")
    train: dict[str, Any] = Field(
        default_factory=dict, description="the bootstrap original's recipe (first batch only); {}: preset"
    )
    holdout_fraction: float = Field(
        HOLDOUT_FRACTION, ge=0, lt=0.5, description="share of the training split held out for calibration"
    )
    base_model_uri: str = Field(
        "",
        description="your own model to start from (first batch only): a folder or s3://bucket/prefix "
        "holding a save_pretrained model or an `rfau model import` folder; '': train one",
    )
    escalation: list[str | Rung] = Field(
        default_factory=lambda: ["rfau", EXACT],  # type: ignore[arg-type]
        min_length=1,
        description="the ladder a batch climbs from the same base and split until a rung passes its "
        "gates: method names, or {method, config}; a bare name equal to `method` takes "
        "`method_config`; 'retrain' (exact) belongs last",
    )
    deadline_days: int = Field(30, ge=1, description="a request is due this many days after received_at")
    retrain_lead_days: int = Field(
        3, ge=0, description="a batch holding a request due within this many days goes straight to retrain"
    )
    max_attempts: int = Field(
        3, ge=1, description="failed batches after which a request is taken alone, on the exact rung"
    )

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, raw: Any) -> Any:
        """A params file written for an earlier rfau names the key to use instead."""
        if not isinstance(raw, dict):
            return raw
        problems = [f"'{old}' is now '{new}'" for old, new in RENAMED.items() if old in raw]
        problems += [
            f"'{old}' is no batch parameter: set ${env} (a tracking setting)"
            for old, env in MOVED_TO_SETTINGS.items()
            if old in raw
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return raw

    @field_validator("store", "base_model_uri", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return "" if v is None else v  # `store: null` in params.yaml: the default store

    @model_validator(mode="after")
    def _method_on_the_ladder(self) -> BatchParams:
        """`method` (with `method_config`) is a rung, never silently replaced by the default ladder."""
        methods = [r.method if isinstance(r, Rung) else r for r in self.escalation]
        if self.method not in methods:
            raise PydanticCustomError(
                "not_a_rung",
                f"method {self.method!r} is not a rung of escalation {methods}: set escalation to "
                f'e.g. ["{self.method}", "{EXACT}"] (or ["{self.method}"] for no exact fallback)',
            )
        return self

    def ladder(self) -> list[Rung]:
        """The escalation rungs with their settings (a bare name equal to ``method`` takes
        ``method_config``)."""
        out = []
        for r in self.escalation:
            if isinstance(r, Rung):
                out.append(r)
            else:
                out.append(Rung(method=r, config=self.method_config if r == self.method else {}))
        return out


def defaults() -> dict[str, Any]:
    """Every parameter's default, as JSON values (what the KFP pipeline's signature carries)."""
    return BatchParams().model_dump(mode="json")


def parse_params(raw: dict, where: str = "") -> BatchParams:
    """Validated parameters, or a UsageError naming each bad key (``where``: their source)."""
    try:
        return BatchParams.model_validate(raw)
    except ValidationError as e:
        raise UsageError(f"invalid batch parameters{where}: {validation_problems(e)}") from None


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
    ladder = p.ladder()
    methods = [r.method for r in ladder]
    for i, r in enumerate(ladder, 1):
        if EXACT in methods[: i - 1]:
            raise UsageError(
                f"escalation {methods}: rung {i} ({r.method}) after the exact rung is never tried"
            )
        try:
            method_config(r.method, r.config)
        except UsageError as e:
            raise UsageError(f"escalation rung {i}: {e}") from None


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
    params = parse_params(raw, f" in {path}" if path else "")
    check_method(params)
    return params
