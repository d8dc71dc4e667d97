"""How close a model's outputs are to retrain's, per sample, and a per-sample attack."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Mean Jensen-Shannon divergence (nats) between the two models' softmax outputs; each row's
    at least 0 (float32 sums of nearly equal outputs can fall a few 1e-9 below it)."""
    p, q = logits_a.float().softmax(1), logits_b.float().softmax(1)
    m = 0.5 * (p + q)
    kl = lambda a, b: (a * (a.clamp_min(1e-12).log() - b.clamp_min(1e-12).log())).sum(1)  # noqa: E731
    return float((0.5 * kl(p, m) + 0.5 * kl(q, m)).clamp_min(0).mean())


def activation_distance(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Mean L2 distance between the two models' softmax outputs (Chundawat et al. 2023)."""
    return float((logits_a.float().softmax(1) - logits_b.float().softmax(1)).norm(dim=1).mean())


def loss_threshold_mia(
    logits_retain: torch.Tensor,
    y_retain: torch.Tensor,
    logits_test: torch.Tensor,
    y_test: torch.Tensor,
    logits_forget: torch.Tensor,
    y_forget: torch.Tensor,
) -> float:
    """Per-class loss-threshold attack: for each class the threshold that best separates retain
    (member) from test (non-member) losses; share of the forget set called non-member, percent."""
    lr = F.cross_entropy(logits_retain.float(), y_retain, reduction="none")
    lt = F.cross_entropy(logits_test.float(), y_test, reduction="none")
    lf = F.cross_entropy(logits_forget.float(), y_forget, reduction="none")
    lr_all = torch.cat([lr, lt])
    non_member = torch.zeros(len(lf), dtype=torch.bool)
    for c in y_forget.unique():
        a, b = lr[y_retain == c], lt[y_test == c]
        if len(a) == 0 or len(b) == 0:
            a, b = lr, lt  # no reference for this class (e.g. forgotten class): pooled threshold
        cand = torch.cat([a, b]).unique() if len(a) + len(b) else lr_all.unique()
        # balanced accuracy of "member if loss <= t" for each candidate threshold
        acc = (
            (a[None, :] <= cand[:, None]).float().mean(1) + (b[None, :] > cand[:, None]).float().mean(1)
        ) / 2
        t = cand[acc.argmax()]
        m = y_forget == c
        non_member[m] = lf[m] > t
    return float(100.0 * non_member.float().mean())
