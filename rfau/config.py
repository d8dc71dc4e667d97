"""Typed settings for training and unlearning (pydantic): one place for defaults and checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rfau.errors import ModelError, ModelSettingsError, UsageError

if TYPE_CHECKING:  # torch loads where a device is resolved, not with the settings
    import torch


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainConfig(_Config):
    """Recipe of the original model; retrain and the baselines reuse it."""

    architecture: str | None = Field(
        None, description="model architecture; None: small_cnn for digits, resnet18 otherwise"
    )
    width: int | None = Field(None, description="base channel width; None: the architecture's default")
    epochs: int = Field(30, ge=1, description="passes over the training data")
    batch_size: int = Field(128, ge=1, description="images per step")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="SGD with Nesterov momentum, or AdamW")
    lr: float = Field(0.1, gt=0, description="peak learning rate of the one-cycle schedule")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    augment_pad: int = Field(4, ge=0, description="random-crop padding in pixels (0: no crop)")
    augment_flip: bool = Field(True, description="random horizontal flips")
    seed: int = Field(0, description="seed of the initialisation, batch order and augmentation")
    device: str = Field("auto", description="auto (CUDA where available), cpu, cuda or cuda:N")

    @classmethod
    def preset(cls, dataset_kind: str, **overrides: Any) -> TrainConfig:
        base: dict[str, Any] = {}
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


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA where available, else CPU; a named device must exist here."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ModelSettingsError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return resolved


def check_device_setting(device: str, here: bool) -> None:
    """A method's device setting: it must exist here when ``here``, else only its name is checked
    (a pipeline's unlearn task may run on another machine)."""
    if here:
        resolve_device(device)
    elif device != "auto":
        import torch

        try:
            torch.device(device)
        except RuntimeError:
            raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
