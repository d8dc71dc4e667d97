"""Selective Synaptic Dampening (Foster et al. AAAI 2024, if-loops/selective-synaptic-dampening).

No training. With the model in eval mode, the diagonal Fisher importance of every parameter is
the squared gradient of the batch-mean cross-entropy, averaged over batches, computed on the
forget set (``[]_D_f``) and on the reference set (``[]_D``: the full training data = retain +
forget, as in the paper, or the retain set alone). A parameter is *selected* where
``[]_D_f > alpha * []_D`` and then multiplied by ``beta = min(lambda * []_D / []_D_f, 1)``.

Defaults are the paper's (CIFAR ResNet-18/ViT): alpha (selection weighting) 10, lambda
(dampening constant) 1, batch size 128.

``trainable_params`` in the result counts the parameters that were dampened (the only ones the
method changes); ``info`` also has the dampened share per parameter tensor.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rfau.config import _Config, resolve_device
from rfau.errors import ModelError
from rfau.methods._loops import finish, working_copy
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.progress import progress_bar
from rfau.train import set_seed, to_float


class SSDConfig(_Config):
    alpha: float = Field(10.0, gt=0)  # selection weighting: forget importance > alpha * reference
    dampening_lambda: float = Field(1.0, gt=0)  # dampening constant lambda
    reference: Literal["full", "retain"] = "full"  # data of the reference importance
    max_reference_samples: int | None = Field(None, ge=1)  # seeded subsample of the reference set
    batch_size: int = Field(128, ge=1)
    seed: int = 0
    device: str = "auto"


def importances(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, desc: str
) -> list[torch.Tensor]:
    """Mean over batches of the squared gradient of the batch-mean CE, per parameter (float32)."""
    params = [p for p in model.parameters()]
    imps = [torch.zeros_like(p) for p in params]
    starts = range(0, len(y), batch_size)
    with progress_bar(len(starts), desc) as advance:
        for i in starts:
            loss = F.cross_entropy(model(to_float(x[i : i + batch_size])), y[i : i + batch_size])
            for imp, g in zip(imps, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    imp += g.pow(2)
            advance()
    return [imp / max(len(starts), 1) for imp in imps]


def unlearn_ssd(model: nn.Module, data: UnlearnData, cfg: SSDConfig) -> UnlearnResult:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    if len(data.y_forget) == 0:
        raise ModelError("nothing to forget: the forget set is empty")
    work = working_copy(model, device).eval()
    if cfg.reference == "full":
        x_ref, y_ref = torch.cat([data.x_retain, data.x_forget]), torch.cat([data.y_retain, data.y_forget])
    else:
        x_ref, y_ref = data.x_retain, data.y_retain
    # a seeded shuffle: batches mix classes (and a subsample, if asked, is a random one)
    order = torch.randperm(len(y_ref), generator=gen)[: cfg.max_reference_samples]
    x_ref, y_ref = x_ref[order].to(device), y_ref[order].to(device)
    imp_f = importances(
        work, data.x_forget.to(device), data.y_forget.to(device), cfg.batch_size, "ssd forget importance"
    )
    imp_d = importances(work, x_ref, y_ref, cfg.batch_size, "ssd reference importance")
    dampened, per_tensor = 0, {}
    with torch.no_grad():
        for (name, p), fi, di in zip(work.named_parameters(), imp_f, imp_d):
            selected = fi > cfg.alpha * di
            beta = (cfg.dampening_lambda * di / fi.clamp_min(torch.finfo(fi.dtype).tiny)).clamp(max=1.0)
            p.copy_(torch.where(selected, p * beta, p))
            n = int(selected.sum())
            dampened += n
            per_tensor[name] = n / p.numel()
    return finish(
        work,
        start,
        trainable=dampened,
        info={
            "dampened_params": dampened,
            "reference_samples": len(y_ref),
            "dampened_share_per_tensor": per_tensor,
        },
    )
