"""The one interface every unlearning method implements: ``method(model, data, cfg) -> result``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class UnlearnData:
    """Tensors a method may use. Images are uint8 [N, C, H, W]; labels int64 [N].

    ``forget_classwise`` marks forget samples whose whole class is being forgotten (the
    class-wise regime); the others are forgotten sample-wise. ``holdout`` is training-split data
    the original model never saw, used to calibrate what "unseen" looks like.
    """

    x_retain: torch.Tensor
    y_retain: torch.Tensor
    x_forget: torch.Tensor
    y_forget: torch.Tensor
    forget_classwise: torch.Tensor
    x_holdout: torch.Tensor
    y_holdout: torch.Tensor
    num_classes: int


@dataclass
class UnlearnResult:
    model: nn.Module  # the model to serve (adapters merged where there are any)
    trainable_params: int
    total_params: int
    seconds: float
    adapter: nn.Module | None = None  # peft model (unmerged) whose adapter is the deletion delta
    info: dict = field(default_factory=dict)
