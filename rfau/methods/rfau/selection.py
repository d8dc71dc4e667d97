"""When to stop and which epoch to return: two-sample statistics of per-sample losses, forget
against unseen (pure functions of tensors), and the per-epoch adapter snapshots kept for them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sample_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (float32)."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def ks_distance(a: torch.Tensor, b: torch.Tensor, weights_b: torch.Tensor | None = None) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs of
    ``a`` and ``b`` (``b`` weighted by ``weights_b`` where given, e.g. to match a class histogram)."""
    if len(a) == 0 or len(b) == 0:
        return 1.0
    wb = torch.ones(len(b)) if weights_b is None else weights_b.float()
    if float(wb.sum()) <= 0:
        return 1.0
    values = torch.cat([a.float(), b.float()])
    w = torch.cat([torch.full((len(a),), 1.0 / len(a)), -wb / wb.sum()])
    order = values.argsort()
    values, cdf_gap = values[order], w[order].double().cumsum(0)
    last = torch.ones(len(values), dtype=torch.bool)  # ties: the gap only after the last equal value
    last[:-1] = values[1:] != values[:-1]
    return float(cdf_gap[last].abs().max())


def ks_critical(n: int, m: float, alpha: float) -> float:
    """The KS statistic above which two samples of sizes n and m differ at level ``alpha``
    (asymptotic: sqrt(-ln(alpha / 2) / 2) * sqrt((n + m) / (n m)))."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def histogram_weights(y_ref: torch.Tensor, y_forget: torch.Tensor, c: int) -> torch.Tensor:
    """Weights of reference samples that give them the forget set's class histogram (a class with
    no reference sample cannot be matched and is left out)."""
    share_f = torch.bincount(y_forget, minlength=c).float() / max(len(y_forget), 1)
    share_r = torch.bincount(y_ref, minlength=c).float() / max(len(y_ref), 1)
    return (share_f / share_r.clamp_min(1e-12))[y_ref]


def unseen_distance(
    loss_forget: torch.Tensor,
    loss_ref: torch.Tensor,
    weights_ref: torch.Tensor | None = None,
    recognised: float = 0.0,
) -> float:
    """How far the forget samples' losses are from the unseen reference's: the KS statistic, plus
    ``recognised`` (the share of class-wise forget samples still predicted as their class, which
    retraining leaves at 0), so that an epoch that still recognises the class never wins."""
    return ks_distance(loss_forget, loss_ref, weights_ref) + recognised


class Snapshots:
    """The trainable (adapter) parameters of the epoch whose forget statistics were closest to
    the unseen reference so far; ``patience`` epochs without a closer one end training."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = math.inf
        self.best_epoch = -1
        self.state: list[torch.Tensor] | None = None
        self.trace: list[float] = []

    def offer(self, work: nn.Module, epoch: int, distance: float) -> bool:
        """Record this epoch's state if it is the closest yet; True when training may stop."""
        self.trace.append(round(distance, 4))
        if distance < self.best:
            self.best, self.best_epoch = distance, epoch
            self.state = [p.detach().clone() for p in work.parameters() if p.requires_grad]
        return epoch - self.best_epoch >= self.patience

    def restore(self, work: nn.Module) -> None:
        if self.state is None:
            return
        with torch.no_grad():
            for p, s in zip([p for p in work.parameters() if p.requires_grad], self.state):
                p.copy_(s)
