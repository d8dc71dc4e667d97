"""Fine-tuning (FT): train all parameters on the retain set only, relying on catastrophic
forgetting of the forget set (Warnecke et al. 2023; the "FT" baseline of SalUn, Fan et al. 2024).

Defaults follow SalUn's classification code (OPTML-Group/Unlearn-Saliency, CIFAR-10 ResNet-18):
10 epochs, SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch size 256.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field

from rfau.methods.sgd import CrossEntropyMethod, SGDConfig


class FinetuneConfig(SGDConfig):
    epochs: int = Field(10, ge=1, description="passes over the retain set")
    batch_size: int = Field(256, ge=1, description="retain images per step")
    lr: float = Field(0.01, gt=0, description="SGD learning rate (constant)")


class Finetune(CrossEntropyMethod):
    name = "finetune"
    summary = "fine-tune all weights on the retain set (FT)"
    config = FinetuneConfig

    def examples(self) -> tuple[torch.Tensor, Callable[[int], torch.Tensor]]:
        y = self.data.y_retain.to(self.device)
        return self.data.x_retain.to(self.device), lambda _epoch: y
