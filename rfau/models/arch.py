"""Architectures, by name. Each model takes float images in [0, 1] and normalises inside,
so a checkpoint carries its own preprocessing (mean/std are buffers in the state dict)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rfau.errors import ModelError


class Normalize(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels, 1, 1))
        self.register_buffer("std", torch.ones(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Staged(nn.Module):
    """A model run as a chain of stages, so that a frozen prefix can be computed once and cached.

    ``STAGES`` names each stage and the module-name prefixes it contains, in execution order.
    """

    STAGES: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def stage_fns(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for fn in self.stage_fns()[start:stop]:
            x = fn(x)
        return x

    def first_stage(self, module_names: list[str]) -> int:
        """Index of the earliest stage holding any of these modules (all stages before it are
        untouched by them)."""
        for i, (_, prefixes) in enumerate(self.STAGES):
            if any(n == p or n.startswith(p + ".") for n in module_names for p in prefixes):
                return i
        return 0


class SmallCNN(Staged):
    """A compact CNN for small images such as the 8x8 digits (about 110k parameters)."""

    STAGES = (
        ("stem", ("norm", "conv1", "conv2")),
        ("conv3", ("conv3", "pool", "flatten")),
        ("head", ("fc1", "fc")),
    )

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.norm = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(4 * w, 4 * w)
        self.fc = nn.Linear(4 * w, num_classes)

    def stage_fns(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [
            lambda x: torch.max_pool2d(torch.relu(self.conv2(torch.relu(self.conv1(self.norm(x))))), 2),
            lambda x: self.flatten(self.pool(torch.relu(self.conv3(x)))),
            lambda x: self.fc(torch.relu(self.fc1(x))),
        ]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(Staged):
    """CIFAR-style ResNet-18 (3x3 stem, no max-pool); ``width`` 64 is the standard model."""

    STAGES = (
        ("stem", ("norm", "conv1", "bn1")),
        ("layer1", ("layer1",)),
        ("layer2", ("layer2",)),
        ("layer3", ("layer3",)),
        ("layer4", ("layer4",)),
        ("head", ("pool", "flatten", "fc")),
    )
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        w = width
        self.norm = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        chans = [w, 2 * w, 4 * w, 8 * w]
        cin = w
        for i, c in enumerate(chans):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c, 1)))
            cin = c
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * w, num_classes)

    def stage_fns(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [
            lambda x: torch.relu(self.bn1(self.conv1(self.norm(x)))),
            self.layer1,
            self.layer2,
            self.layer3,
            self.layer4,
            lambda x: self.fc(self.flatten(self.pool(x))),
        ]


ARCHITECTURES: dict[str, type[Staged]] = {"small_cnn": SmallCNN, "resnet18": ResNet18}


def architecture_name(model: nn.Module) -> str | None:
    """The registered name of a model's architecture (None for a model built elsewhere)."""
    return next((name for name, cls in ARCHITECTURES.items() if type(model) is cls), None)


def build_model(architecture: str, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    cls = ARCHITECTURES.get(architecture)
    if cls is None:
        raise ModelError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    try:
        return cls(in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise ModelError(f"bad arguments for architecture {architecture!r}: {e}") from None


def default_architecture(dataset_kind: str) -> str:
    return "small_cnn" if dataset_kind == "digits" else "resnet18"
