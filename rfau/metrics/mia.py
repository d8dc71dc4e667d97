"""Membership inference as the field measures unlearning (SalUn's evaluation/SVC_MIA.py).

Members = as many retain samples as the test set has; non-members = the test set. An RBF SVC
(C=3, gamma='auto') learns member vs non-member from one scalar per sample, then labels the
forget set. MIA-efficacy = share of the forget set called non-member, in percent.
Features: ``confidence`` (softmax probability of the true label, the field's default) and
``entropy`` of the softmax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # scikit-learn (2-3 s to import) loads where an attack is fitted
    from sklearn.svm import SVC

FEATURES = ("confidence", "entropy")


def attack_feature(logits: torch.Tensor, y: torch.Tensor, kind: str) -> np.ndarray:
    p = logits.float().softmax(1)
    if kind == "confidence":
        f = p[torch.arange(len(y)), y]
    elif kind == "entropy":
        f = -(p * p.clamp_min(1e-12).log()).sum(1)
    else:
        raise ValueError(f"unknown MIA feature {kind!r}; known: {FEATURES}")
    return f.numpy().reshape(-1, 1).astype(np.float64)


def fit_attack(
    logits_retain: torch.Tensor,
    y_retain: torch.Tensor,
    logits_test: torch.Tensor,
    y_test: torch.Tensor,
    kind: str = "confidence",
    seed: int = 0,
) -> SVC:
    """The SVC attack: as many (seeded) retain members as test non-members."""
    from sklearn.svm import SVC

    n = min(len(y_test), len(y_retain))
    pick = torch.randperm(len(y_retain), generator=torch.Generator().manual_seed(seed))[:n]
    members = attack_feature(logits_retain[pick], y_retain[pick], kind)
    non_members = attack_feature(logits_test[:n], y_test[:n], kind)
    x = np.concatenate([members, non_members])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    return SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)


def nonmember_share(clf: SVC, logits: torch.Tensor, y: torch.Tensor, kind: str = "confidence") -> float:
    """Percent of the samples the attack calls non-member."""
    return float(100.0 * (1.0 - clf.predict(attack_feature(logits, y, kind))).mean())


def mia_efficacy(
    logits_retain: torch.Tensor,
    y_retain: torch.Tensor,
    logits_test: torch.Tensor,
    y_test: torch.Tensor,
    logits_forget: torch.Tensor,
    y_forget: torch.Tensor,
    kind: str = "confidence",
    seed: int = 0,
) -> float:
    clf = fit_attack(logits_retain, y_retain, logits_test, y_test, kind, seed)
    return nonmember_share(clf, logits_forget, y_forget, kind)
