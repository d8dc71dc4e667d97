"""One registry of unlearning methods: name -> (callable(model, data, cfg), config class)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from rfau.config import RFAUConfig, TrainConfig
from rfau.errors import RfauError
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.methods.baselines import unlearn_original, unlearn_retrain
from rfau.methods.finetune import FinetuneConfig, unlearn_finetune
from rfau.methods.neggrad import NegGradPlusConfig, unlearn_neggrad_plus
from rfau.methods.random_label import RandomLabelConfig, unlearn_random_label
from rfau.methods.rfau import unlearn_rfau
from rfau.methods.salun import SalUnConfig, unlearn_salun
from rfau.methods.scrub import ScrubConfig, unlearn_scrub
from rfau.methods.ssd import SSDConfig, unlearn_ssd


@dataclass(frozen=True)
class Method:
    fn: Callable[..., UnlearnResult]
    config: type[BaseModel] | None
    summary: str


METHODS: dict[str, Method] = {
    "rfau": Method(unlearn_rfau, RFAUConfig, "LoRA residual feature alignment (this project)"),
    "original": Method(unlearn_original, None, "do nothing: the original model"),
    "retrain": Method(unlearn_retrain, TrainConfig, "retrain from scratch on the retain set"),
    "finetune": Method(unlearn_finetune, FinetuneConfig, "fine-tune all weights on the retain set (FT)"),
    "neggrad_plus": Method(
        unlearn_neggrad_plus, NegGradPlusConfig, "descend on retain, bounded ascent on forget (NegGrad+)"
    ),
    "random_label": Method(
        unlearn_random_label, RandomLabelConfig, "train on retain + forget with random other labels (RL)"
    ),
    "scrub": Method(unlearn_scrub, ScrubConfig, "teacher-student max/min distillation (SCRUB)"),
    "salun": Method(unlearn_salun, SalUnConfig, "random labels on gradient-salient weights only (SalUn)"),
    "ssd": Method(
        unlearn_ssd, SSDConfig, "dampen forget-specific weights by Fisher ratio, no training (SSD)"
    ),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise RfauError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "UnlearnData", "UnlearnResult", "get_method"]
