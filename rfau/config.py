"""Typed settings for training and unlearning (pydantic): one place for defaults and checks."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainConfig(_Config):
    """Recipe of the original model; retrain and the baselines reuse it."""

    architecture: str | None = None  # None: small_cnn for digits, resnet18 otherwise
    width: int | None = None  # None: the architecture's default width
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)  # peak learning rate of the one-cycle schedule
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment_pad: int = Field(4, ge=0)  # random-crop padding in pixels
    augment_flip: bool = True
    seed: int = 0
    device: str = "auto"

    @classmethod
    def preset(cls, dataset_kind: str, **overrides) -> TrainConfig:
        base: dict = {}
        if dataset_kind == "digits":
            base = dict(
                epochs=40,
                batch_size=64,
                optimizer="adam",
                lr=3e-3,
                weight_decay=0.0,
                augment_pad=1,
                augment_flip=False,
            )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


class RFAUConfig(_Config):
    """Residual Feature Alignment Unlearning: LoRA on a frozen model, zero/shifted residuals."""

    rank: int = Field(4, ge=1)
    alpha: float = Field(8.0, gt=0)
    target_modules: list[str] | None = None  # None: the architecture's defaults
    taps: list[str] | None = None  # None: the architecture's defaults
    regime: Literal["auto", "class", "sample"] = "auto"
    # class-wise shift: the original's output with the forgotten classes removed (default), or
    # the tapped features of random retain samples of other classes
    classwise_target: Literal["masked_output", "other_class_features"] = "masked_output"
    epochs: int = Field(30, ge=1)
    retain_budget: int = Field(5000, ge=1)  # retain samples cached and visited per epoch
    batch_size: int = Field(128, ge=1)
    forget_batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    forget_weight: float = Field(1.0, ge=0)
    seed: int = 0
    device: str = "auto"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
