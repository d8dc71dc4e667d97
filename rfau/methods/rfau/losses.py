"""The loss terms of RFAU, pure functions (features: lists over taps of [batch, dim] tensors)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def zero_residual_loss(
    features: list[torch.Tensor], originals: list[torch.Tensor], scales: list[torch.Tensor]
) -> torch.Tensor:
    """Retain: sum over taps of ||h_l - h_l^0||^2 (mean) / E||h_l^0||^2; zero iff no residual."""
    return _total([F.mse_loss(h, f.float()) / sc for h, f, sc in zip(features, originals, scales)])


def feature_shift_loss(
    features: list[torch.Tensor], targets: list[torch.Tensor], scales: list[torch.Tensor], rows: torch.Tensor
) -> torch.Tensor:
    """Class-wise forget (feature variant): each row's scaled squared distance to its target
    features, summed over taps, over the masked ``rows``, divided by the batch size."""
    per = [(h - t.float()).pow(2).mean(1) / sc for h, t, sc in zip(features, targets, scales)]
    return (_total(per) * rows).sum() / len(rows)


def output_kl_loss(q: torch.Tensor, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Forget (output level): KL(q || softmax(logits)) over the masked ``rows``, divided by the
    batch size."""
    kl = (q * (q.clamp_min(1e-12).log() - logits.log_softmax(1))).sum(1)
    return (kl * rows).sum() / len(q)


def _total(terms: list[torch.Tensor]) -> torch.Tensor:
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def anchor_weights(y_r: torch.Tensor, y_f: torch.Tensor, c: int, anchor: float) -> torch.Tensor | None:
    """Sampling weights of the retain budget: ``(1 - anchor) + anchor * c * share_f(class)``,
    with ``share_f`` the class's share of the forget set (a random forget set gives about 1
    everywhere; one class's sub-population gives that class's kept samples weight up to
    ``1 + anchor * (c - 1)``); None when they are uniform (a plain shuffle)."""
    share = torch.bincount(y_f, minlength=c).float() / max(len(y_f), 1)
    w = (1 - anchor) + anchor * c * share[y_r.cpu()]
    return None if len(w) == 0 or bool((w == w[0]).all()) else w


def nearest_retain(feats_r: torch.Tensor, feats_f: torch.Tensor, share: float) -> torch.Tensor:
    """Which retain rows are the ``share`` of the budget nearest (Euclidean, in the given
    features) to any forget row: the forget set's neighbourhood, which a zero residual there
    would hold in place."""
    n = round(share * len(feats_r))
    out = torch.zeros(len(feats_r), dtype=torch.bool)
    if n == 0 or len(feats_f) == 0:
        return out
    fr, ff = feats_r.float(), feats_f.float()
    nearest = torch.cat([torch.cdist(fr[i : i + 1024], ff).min(1).values for i in range(0, len(fr), 1024)])
    out[nearest.argsort()[:n].cpu()] = True
    return out


def loss_match_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared gap between each row's cross-entropy and its target loss, over the rows with a
    target (NaN: none), divided by the batch size."""
    rows = ~torch.isnan(target)
    ce = F.cross_entropy(logits.float(), y, reduction="none")
    return ((ce - target.nan_to_num()).pow(2) * rows).sum() / len(y)
