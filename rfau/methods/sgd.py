"""Shared pieces of the SGD-trained baselines (finetune, neggrad_plus, random_label, scrub,
salun): the common SGD settings, seeded index batches over the uint8 tensors, and
``CrossEntropyMethod`` (cross-entropy over shuffled epochs) for the ones that need nothing else.

Every random choice (batch order, augmentation, random labels) draws from the runner's one seeded
``torch.Generator`` on the CPU, so a method is deterministic for a fixed ``seed`` on a given
device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rfau.data.base import to_float
from rfau.errors import ModelError
from rfau.methods.base import MethodConfig
from rfau.methods.runner import EpochMethod, Step
from rfau.train import augment, autocast, even_batches


class SGDConfig(MethodConfig):
    """Settings every SGD-trained baseline shares; each method's config overrides the defaults
    (epochs, lr, batch size) with its paper's values. The augmentation defaults are the CIFAR
    ones (random crop with 4-pixel padding + horizontal flip), as in the papers' data loaders."""

    epochs: int = Field(10, ge=1, description="passes over the training data")
    batch_size: int = Field(256, ge=1, description="images per step")
    lr: float = Field(0.01, gt=0, description="SGD learning rate (constant)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay")
    augment_pad: int = Field(4, ge=0, description="random-crop padding in pixels (0: no crop)")
    augment_flip: bool = Field(True, description="random horizontal flips")


def sgd(params: Iterable[nn.Parameter], cfg: SGDConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def index_batches(n: int, batch_size: int, gen: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """One shuffled pass over ``range(n)`` as index batches of near-equal size (``even_batches``)."""
    return list(even_batches(torch.randperm(n, generator=gen).to(device), batch_size))


class Cycler:
    """Endless shuffled index batches over ``range(n)``, reshuffled after every pass
    (``itertools.cycle`` over a loader, as the papers pair retain with forget batches)."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator, device: torch.device) -> None:
        if n == 0:
            raise ModelError("nothing to forget: the forget set is empty")
        self.n, self.batch_size, self.gen, self.device = n, batch_size, gen, device
        self.queue: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        if not self.queue:
            self.queue = index_batches(self.n, self.batch_size, self.gen, self.device)
        return self.queue.pop(0)


def inputs(x: torch.Tensor, idx: torch.Tensor, cfg: SGDConfig, gen: torch.Generator) -> torch.Tensor:
    """Float images of one index batch, augmented with the config's crop/flip."""
    return augment(to_float(x[idx]), cfg.augment_pad, cfg.augment_flip, gen)


def other_labels(y: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly random label different from each true label."""
    if num_classes < 2:
        raise ModelError("random relabelling needs at least two classes")
    shift = torch.randint(1, num_classes, (len(y),), generator=gen)
    return (y.cpu() + shift) % num_classes


class CrossEntropyMethod(EpochMethod):
    """Shuffled epochs of cross-entropy with SGD on all weights (constant lr, as the baselines'
    official code uses within its short unlearning runs) over the images and labels that
    ``examples`` gives; the labels may be redrawn every epoch."""

    cfg: SGDConfig

    def examples(self) -> tuple[torch.Tensor, Callable[[int], torch.Tensor]]:
        """Images on the device and ``labels(epoch)`` for them."""
        raise NotImplementedError

    def setup(self, work: nn.Module) -> torch.optim.Optimizer:
        self.work = work
        self.x, self.labels = self.examples()
        return sgd(work.parameters(), self.cfg)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        labels = self.labels(epoch)
        for idx in index_batches(len(self.x), self.cfg.batch_size, self.gen, self.device):
            yield inputs(self.x, idx, self.cfg, self.gen), labels[idx]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Step:
        xb, yb = batch
        with autocast(self.device):
            loss = F.cross_entropy(self.work(xb), yb)
        return Step(loss, {"loss": loss})
