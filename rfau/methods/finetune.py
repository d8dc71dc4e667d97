"""Fine-tuning (FT): train all parameters on the retain set only, relying on catastrophic
forgetting of the forget set (Warnecke et al. 2023; the "FT" baseline of SalUn, Fan et al. 2024).

Defaults follow SalUn's classification code (OPTML-Group/Unlearn-Saliency, CIFAR-10 ResNet-18):
10 epochs, SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch size 256.
"""

from __future__ import annotations

import time

from pydantic import Field
from torch import nn

from rfau.config import resolve_device
from rfau.methods._loops import SGDConfig, ce_epochs, finish, working_copy
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.train import set_seed


class FinetuneConfig(SGDConfig):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.01, gt=0)


def unlearn_finetune(model: nn.Module, data: UnlearnData, cfg: FinetuneConfig) -> UnlearnResult:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    work = working_copy(model, device)
    x, y = data.x_retain.to(device), data.y_retain.to(device)
    history = ce_epochs(work, x, y, cfg, gen, "finetune")
    return finish(work, start, info={"history": history})
