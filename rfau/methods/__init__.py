"""One registry of unlearning methods and one way to run them: ``run_method(name, model, data,
cfg)``. Each method is a class in its own file (its config with described settings, its
defaults, its loss); the runner (``rfau.methods.runner``) owns what they share."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from torch import nn

from rfau.errors import UsageError
from rfau.methods.base import Setting, UnlearnData, UnlearnResult, describe_settings
from rfau.methods.baselines import Original, Retrain
from rfau.methods.finetune import Finetune
from rfau.methods.neggrad import NegGradPlus
from rfau.methods.random_label import RandomLabel
from rfau.methods.rfau import RFAU
from rfau.methods.runner import RunOptions, UnlearnMethod, run
from rfau.methods.salun import SalUn
from rfau.methods.scrub import Scrub
from rfau.methods.ssd import SSD

Method = type[UnlearnMethod]  # a method class: .name, .summary, .config (its settings class or None)

METHODS: dict[str, Method] = {
    m.name: m for m in (RFAU, Original, Retrain, Finetune, NegGradPlus, RandomLabel, Scrub, SalUn, SSD)
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def run_method(
    name: str,
    model: nn.Module,
    data: UnlearnData,
    cfg: BaseModel | dict[str, Any] | None = None,
    options: RunOptions | None = None,
) -> UnlearnResult:
    """Unlearn ``data``'s forget set from a copy of ``model`` with method ``name``; ``cfg``: the
    method's config object, a dict of settings (validated), or None for its defaults."""
    return run(get_method(name), model, data, cfg, options)


def settings_help(name: str) -> list[Setting]:
    """Every setting of a method: name, type, default, description and bounds."""
    return describe_settings(get_method(name).config)


__all__ = [
    "METHODS",
    "Method",
    "RunOptions",
    "Setting",
    "UnlearnData",
    "UnlearnResult",
    "get_method",
    "run_method",
    "settings_help",
]
