"""One registry of unlearning methods: name -> (callable(model, data, cfg), config class)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from rfau.config import RFAUConfig, TrainConfig
from rfau.errors import RfauError
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.methods.baselines import unlearn_original, unlearn_retrain
from rfau.methods.rfau import unlearn_rfau


@dataclass(frozen=True)
class Method:
    fn: Callable[..., UnlearnResult]
    config: type[BaseModel] | None
    summary: str


METHODS: dict[str, Method] = {
    "rfau": Method(unlearn_rfau, RFAUConfig, "LoRA residual feature alignment (this project)"),
    "original": Method(unlearn_original, None, "do nothing: the original model"),
    "retrain": Method(unlearn_retrain, TrainConfig, "retrain from scratch on the retain set"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise RfauError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "UnlearnData", "UnlearnResult", "get_method"]
