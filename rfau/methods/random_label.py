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

import time

import torch
from pydantic import Field
from torch import nn

from rfau.config import resolve_device
from rfau.methods._loops import SGDConfig, ce_epochs, finish, other_labels, working_copy
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.train import set_seed


class RandomLabelConfig(SGDConfig):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.01, gt=0)


def relabelled_union(data: UnlearnData, gen: torch.Generator, device: torch.device):
    """Images of retain + forget on the device, and ``labels(epoch)`` that gives the retain labels
    followed by fresh random other labels for the forget samples."""
    x = torch.cat([data.x_retain, data.x_forget]).to(device)
    y_r = data.y_retain.to(device)

    def labels(_epoch: int) -> torch.Tensor:
        return torch.cat([y_r, other_labels(data.y_forget, data.num_classes, gen).to(device)])

    return x, labels


def unlearn_random_label(model: nn.Module, data: UnlearnData, cfg: RandomLabelConfig) -> UnlearnResult:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    work = working_copy(model, device)
    x, labels = relabelled_union(data, gen, device)
    history = ce_epochs(work, x, labels, cfg, gen, "random_label")
    return finish(work, start, info={"history": history})
