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

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rfau.data.base import to_float
from rfau.methods.base import MethodConfig, MethodInfo
from rfau.methods.runner import UnlearnMethod
from rfau.progress import progress_bar


class SSDConfig(MethodConfig):
    alpha: float = Field(10.0, gt=0, description="selection weighting: forget importance > alpha x reference")
    dampening_lambda: float = Field(1.0, gt=0, description="dampening constant lambda")
    reference: Literal["full", "retain"] = Field(
        "full", description="data of the reference importance: retain + forget (the paper), or retain"
    )
    max_reference_samples: int | None = Field(
        None, ge=1, description="seeded random subsample of the reference set; None: all of it"
    )
    batch_size: int = Field(128, ge=1, description="images per importance batch")


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


@torch.no_grad()
def dampen(
    model: nn.Module, imp_f: list[torch.Tensor], imp_d: list[torch.Tensor], alpha: float, lam: float
) -> dict[str, int]:
    """Multiply each selected weight by beta = min(lambda * []_D / []_D_f, 1); returns the number
    of dampened weights per parameter tensor."""
    dampened = {}
    for (name, p), fi, di in zip(model.named_parameters(), imp_f, imp_d):
        selected = fi > alpha * di
        beta = (lam * di / fi.clamp_min(torch.finfo(fi.dtype).tiny)).clamp(max=1.0)
        p.copy_(torch.where(selected, p * beta, p))
        dampened[name] = int(selected.sum())
    return dampened


class SSDInfo(MethodInfo):
    dampened_params: int | None = None
    reference_samples: int | None = None
    dampened_share_per_tensor: dict[str, float] | None = None  # by parameter name


class SSD(UnlearnMethod):
    name = "ssd"
    summary = "dampen forget-specific weights by Fisher ratio, no training (SSD)"
    config = SSDConfig
    cfg: SSDConfig
    info_model = SSDInfo
    info: SSDInfo

    def working_copy(self, model: nn.Module) -> nn.Module:
        return super().working_copy(model).eval()

    def reference_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference data on the device, in a seeded random order (batches mix classes, and a
        subsample, if asked for, is a random one)."""
        data = self.data
        if self.cfg.reference == "full":
            x, y = torch.cat([data.x_retain, data.x_forget]), torch.cat([data.y_retain, data.y_forget])
        else:
            x, y = data.x_retain, data.y_retain
        order = torch.randperm(len(y), generator=self.gen)[: self.cfg.max_reference_samples]
        return x[order].to(self.device), y[order].to(self.device)

    def unlearn(self, work: nn.Module) -> None:
        cfg, device = self.cfg, self.device
        x_ref, y_ref = self.reference_set()
        x_f, y_f = self.data.x_forget.to(device), self.data.y_forget.to(device)
        imp_f = importances(work, x_f, y_f, cfg.batch_size, "ssd forget importance")
        imp_d = importances(work, x_ref, y_ref, cfg.batch_size, "ssd reference importance")
        per_tensor = dampen(work, imp_f, imp_d, cfg.alpha, cfg.dampening_lambda)
        sizes = dict((n, p.numel()) for n, p in work.named_parameters())
        self.info.dampened_params = sum(per_tensor.values())
        self.info.reference_samples = len(y_ref)
        self.info.dampened_share_per_tensor = {n: k / sizes[n] for n, k in per_tensor.items()}

    def trainable_params(self, work: nn.Module) -> int:
        return int(self.info.dampened_params or 0)
