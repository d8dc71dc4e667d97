"""Random labelling (RL): relabel every forget sample with a random *other* class and train
all parameters on the forget set (random labels) together with the retain set (Golatkar et al.
2020; the "RL" baseline of SalUn, Fan et al. 2024).

The forget and retain samples are shuffled together each epoch (SalUn's CIFAR-100/TinyImageNet
path; its CIFAR-10 path visits the forget set first, then the retain set). The random labels are
redrawn every epoch, as SalUn's CIFAR-10 path redraws them per batch, but always differ from the
true label (the brief's "random other labels"; SalUn draws from all classes).

Defaults follow SalUn's code for CIFAR-10 ResNet-18: 10 epochs, SGD lr 0.01 (searched in
[0.01, 0.1] there), momentum 0.9, weight decay 5e-4, batch size 256.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import BaseModel, Field

from rfau.methods.sgd import CrossEntropyMethod, SGDConfig, other_labels


class RandomLabelConfig(SGDConfig):
    epochs: int = Field(10, ge=1, description="passes over retain + forget")
    batch_size: int = Field(256, ge=1, description="images per step")
    lr: float = Field(0.01, gt=0, description="SGD learning rate (constant)")


class RandomLabel(CrossEntropyMethod):
    name = "random_label"
    summary = "train on retain + forget with random other labels (RL)"
    config: ClassVar[type[BaseModel] | None] = RandomLabelConfig

    def examples(self) -> tuple[torch.Tensor, Callable[[int], torch.Tensor]]:
        """Retain + forget images; labels: the retain labels followed by fresh random other
        labels for the forget samples, redrawn every epoch."""
        data, device = self.data, self.device
        x = torch.cat([data.x_retain, data.x_forget]).to(device)
        y_r = data.y_retain.to(device)

        def labels(_epoch: int) -> torch.Tensor:
            return torch.cat([y_r, other_labels(data.y_forget, data.num_classes, self.gen).to(device)])

        return x, labels
