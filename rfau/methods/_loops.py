"""Shared pieces of the training-based baselines (finetune, neggrad_plus, random_label, scrub,
salun): the common SGD settings, a working copy of the model on the device, seeded index batches
over the uint8 tensors, and one cross-entropy epoch loop.

Every random choice (batch order, augmentation, random labels) draws from one seeded
``torch.Generator`` on the CPU, so a method is deterministic for a fixed ``seed`` on a given
device.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rfau.config import _Config
from rfau.errors import ModelError
from rfau.methods.base import UnlearnResult
from rfau.models.checkpoint import count_parameters
from rfau.progress import progress_bar
from rfau.train import augment, autocast, to_float


class SGDConfig(_Config):
    """Settings every SGD-trained baseline shares; each method's config overrides the defaults
    (epochs, lr, batch size) with its paper's values. The augmentation defaults are the CIFAR
    ones (random crop with 4-pixel padding + horizontal flip), as in the papers' data loaders."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    augment_pad: int = Field(4, ge=0)
    augment_flip: bool = True
    seed: int = 0
    device: str = "auto"


def working_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy on ``device`` with every parameter trainable; the caller's model is untouched."""
    m = copy.deepcopy(model).to(device)
    for p in m.parameters():
        p.requires_grad_(True)
    return m


def sgd(params, cfg: SGDConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def index_batches(n: int, batch_size: int, gen: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """One shuffled pass over ``range(n)`` as index batches (the last may be short)."""
    return list(torch.randperm(n, generator=gen).to(device).split(batch_size))


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


def ce_epochs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | Callable[[int], torch.Tensor],
    cfg: SGDConfig,
    gen: torch.Generator,
    desc: str,
    params: list[nn.Parameter] | None = None,
    before_step: Callable[[], None] | None = None,
    after_step: Callable[[torch.optim.Optimizer], None] | None = None,
) -> list[dict]:
    """``cfg.epochs`` shuffled epochs of cross-entropy training with SGD (constant lr, as the
    baselines' official code uses within its short unlearning runs). ``x``, ``y`` live on the
    model's device; ``y`` may be a function ``epoch -> labels`` (random labels redrawn per epoch).
    ``before_step`` runs between backward and the optimizer step (e.g. gradient masking),
    ``after_step`` after it. Returns the per-epoch mean loss."""
    device = next(model.parameters()).device
    opt = sgd(params if params is not None else list(model.parameters()), cfg)
    history = []
    model.train()
    with progress_bar(cfg.epochs, desc) as advance:
        for epoch in range(cfg.epochs):
            labels = y(epoch) if callable(y) else y
            batches = index_batches(len(x), cfg.batch_size, gen, device)
            total = torch.zeros((), device=device)
            for idx in batches:
                xb = inputs(x, idx, cfg, gen)
                with autocast(device):
                    loss = F.cross_entropy(model(xb), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if before_step is not None:
                    before_step()
                opt.step()
                if after_step is not None:
                    after_step(opt)
                total += loss.detach()
            mean = float(total) / max(len(batches), 1)  # one host sync per epoch
            check_finite(desc, epoch, loss=mean)
            history.append({"epoch": epoch, "loss": mean})
            advance(loss=mean)
    return history


def check_finite(desc: str, epoch: int, **values: float) -> None:
    """Stop a run whose loss went to inf/NaN instead of saving a broken model."""
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise ModelError(
            f"{desc} diverged in epoch {epoch + 1} ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
            "lower the learning rate"
        )


def finish(
    model: nn.Module, start: float, trainable: int | None = None, info: dict | None = None
) -> UnlearnResult:
    """The result of a method: model in eval mode, parameter counts and wall time."""
    total = count_parameters(model)
    return UnlearnResult(
        model=model.eval(),
        trainable_params=total if trainable is None else trainable,
        total_params=total,
        seconds=time.perf_counter() - start,
        info=info or {},
    )
