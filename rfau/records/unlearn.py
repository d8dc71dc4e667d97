"""unlearn.json: how a model was unlearned, and the facts its method reports about itself."""

from __future__ import annotations

from typing import Any

from pydantic import SerializerFunctionWrapHandler, model_serializer, model_validator

from rfau.data.split import Regime
from rfau.records.base import Record


class UnlearnInfo(Record):
    """unlearn.json: how a model was unlearned (method, settings, cost, per-epoch losses) and the
    facts the method reports about itself (``details``).

    Each method declares its own facts as a model (``UnlearnMethod.info_model``, validated where
    the method runs), so this record knows none of them. On disk they sit at the top level beside
    the keys below, as they always have: a key this record does not name is a method's fact."""

    method: str
    # the method's own settings, as its config class (rfau.methods.*) validated and dumped them:
    # each method has other settings, so the record keeps them as that class's dump
    config: dict[str, Any]
    seconds: float
    trainable_params: int
    total_params: int
    trainable_share: float
    forget_sha256: str
    request_ids: list[str]
    # one row per epoch (the runner's epoch loop): "epoch" and the method's logged loss terms
    history: list[dict[str, float]] | None = None
    regime: Regime | None = None  # what the split asks for (rfau.data.split.forget_regime)
    # the method's facts (its info model's dump, None left out), by name; top-level keys on disk
    details: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _gather_details(cls, data: Any) -> Any:
        """The flat file -> the keys this record names, and the method's facts under ``details``."""
        if not isinstance(data, dict):
            return data
        own = {k: v for k, v in data.items() if k in cls.model_fields}
        facts = {k: v for k, v in data.items() if k not in cls.model_fields}
        if facts and "details" in own:
            raise ValueError(f"method facts both under 'details' and at the top level: {sorted(facts)}")
        return {**own, "details": {**own.get("details", {}), **facts}} if facts else own

    @model_serializer(mode="wrap")
    def _flatten_details(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        facts = out.pop("details", None) or {}
        if "regime" not in out:
            return out | facts
        regime = out.pop("regime")
        return out | facts | {"regime": regime}  # last, where it always was
