"""Reference points every table needs: ``original`` (do nothing) and ``retrain`` (gold standard)."""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from rfau.config import TrainConfig
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.models.checkpoint import count_parameters
from rfau.train import train_model


def unlearn_original(model: nn.Module, data: UnlearnData, cfg: None = None) -> UnlearnResult:
    n = count_parameters(model)
    return UnlearnResult(model=model, trainable_params=0, total_params=n, seconds=0.0)


def unlearn_retrain(model: nn.Module, data: UnlearnData, cfg: TrainConfig) -> UnlearnResult:
    """Train a fresh copy of the architecture on the retain set with the original recipe."""
    start = time.perf_counter()
    fresh = copy.deepcopy(model)
    torch.manual_seed(cfg.seed)  # the fresh initialisation is part of the seeded recipe
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for p in fresh.parameters():
        p.requires_grad_(True)
    trained = train_model(fresh, data.x_retain, data.y_retain, cfg, desc="retrain")
    n = count_parameters(trained)
    return UnlearnResult(
        model=trained, trainable_params=n, total_params=n, seconds=time.perf_counter() - start
    )
