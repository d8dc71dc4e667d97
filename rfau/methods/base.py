"""What every unlearning method shares: its input (``UnlearnData``), its output
(``UnlearnResult``), the settings every method has (``MethodConfig``) and their help."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from rfau.config import _Config
from rfau.errors import ModelError


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
    # forget samples the original never saw (its holdout slice: a class forgotten whole takes its
    # holdout samples along), an unseen reference of the forgotten classes; None: not known
    forget_unseen: torch.Tensor | None = None

    def __post_init__(self) -> None:
        pairs = {
            "retain": (self.x_retain, self.y_retain),
            "forget": (self.x_forget, self.y_forget),
            "holdout": (self.x_holdout, self.y_holdout),
            "forget_classwise": (self.forget_classwise, self.y_forget),
        }
        if self.forget_unseen is not None:
            pairs["forget_unseen"] = (self.forget_unseen, self.y_forget)
        for name, (a, b) in pairs.items():
            if len(a) != len(b):
                raise ModelError(f"unlearn data: {name} has {len(a)} entries but {len(b)} labels")


class MethodInfo(BaseModel):
    """The facts a method reports about its run, for unlearn.json (``rfau.records.UnlearnInfo``
    keeps them beside its own keys). Each method declares its own fields on a subclass
    (``UnlearnMethod.info_model``); a fact it sets without declaring it fails where it is set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # one row per epoch (the runner's epoch loop): "epoch" and the method's logged loss terms
    history: list[dict[str, float]] | None = None

    def facts(self) -> dict[str, Any]:
        """The method's own facts (those set), as unlearn.json keeps them."""
        return self.model_dump(exclude_none=True, exclude={"history"})


@dataclass
class UnlearnResult:
    model: nn.Module  # the model to serve (adapters merged where there are any)
    trainable_params: int
    total_params: int
    seconds: float
    adapter: nn.Module | None = None  # peft model (unmerged) whose adapter is the deletion delta
    info: MethodInfo = field(default_factory=MethodInfo)


class MethodConfig(_Config):
    """Settings every method has; each method's config adds its own, each with a description."""

    seed: int = Field(0, description="seed of every random draw (batch order, augmentation, labels)")
    device: str = Field("auto", description="auto (CUDA where available), cpu, cuda or cuda:N")


@dataclass(frozen=True)
class Setting:
    """One setting of a method, for ``rfau methods NAME``."""

    name: str
    type: str
    default: Any
    description: str
    constraints: str  # e.g. ">= 1"; empty when any value of the type is accepted


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def describe_settings(config: type[BaseModel] | None) -> list[Setting]:
    """Name, type, default, description and bounds of every setting of a config class."""
    if config is None:
        return []
    out = []
    for name, f in config.model_fields.items():
        bounds = [
            f"{sym} {getattr(m, attr)}" for m in f.metadata for attr, sym in _BOUNDS if hasattr(m, attr)
        ]
        default = f.get_default(call_default_factory=True)
        out.append(Setting(name, type_name(f.annotation), default, f.description or "", ", ".join(bounds)))
    return out


def type_name(t: Any) -> str:
    """A readable name of a type annotation: ``int``, ``list[str] | None``, ``'auto' | 'class'``."""
    origin = get_origin(t)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(t))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(t))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in get_args(t))}]"
    if t is type(None):
        return "None"
    return str(getattr(t, "__name__", t))
