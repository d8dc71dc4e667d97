"""Per-sample evidence that a deletion worked: forget data must look like data the model never saw.

Four measurements, each against *unseen* data of the same classes (``unseen reference``): the
holdout slice for samples of kept classes, the test set for samples of forgotten classes (the
holdout holds none of a forgotten class). All are computed by ``rfau.metrics.evaluate_model``.

``forget_vs_unseen_auc`` / ``forget_vs_test_auc`` (0.5 = looks unseen)
    An attacker's view of each sample's output: (loss, true-label probability, logit margin,
    entropy). Forget and reference samples are balanced per class (as many of each, seeded
    draw), then a logistic regression (standardised features) is scored by stratified 5-fold
    cross-validated ROC AUC; mean and spread (std over folds, ``*_cv_std``). The classifier learns
    the direction, so over-forgetting (forget loss *above* unseen loss, the "Streisand effect")
    raises the AUC too. Reported against the unseen reference and against the test samples of the
    same classes: a method that calibrates on the holdout must not be judged only against it.

``forget_member_rate_at_10fpr`` (percent; 10 = looks unseen)
    A per-class loss-threshold attack calibrated on the unseen reference: the threshold calls 10%
    of the reference's samples of that class members (loss below it); the share of forget
    samples it calls members. Above 10: remembered; far below: over-forgotten. Its spread
    (``*_std``, percent points) is what data that looks unseen would show by chance: binomial,
    sqrt(0.1 * 0.9 * (1/n_forget + 1/n_reference)), the reference's term for the threshold's own
    sampling error (the pooled reference size stands in where classes fall back to it).

``relearn_steps`` (see ``RelearnConfig``)
    Ordinary fine-tuning of a copy on the forget set alone (train mode, BatchNorm batch
    statistics and running averages as in any fine-tuning; SGD lr 0.01, momentum 0.9, batch 32,
    no augmentation, at most 256 forget samples, fixed seed), counting steps until the copy's
    accuracy on those samples is back at the reference model's (the original's) accuracy on them.
    A model that truly forgot needs about as many steps as retrain; one that only masked its
    outputs relearns at once. ``cap`` (100) means not relearned within the cap.

``probe_forgotten_class_acc`` (percent; class-wise only)
    A linear probe (multinomial logistic regression, standardised) on the model's penultimate
    features, trained on unseen features of all classes (the holdout plus half of the test set,
    stratified), scored on the other half's samples of the forgotten classes; 2 folds, mean.
    Output-level forgetting that leaves the class readable in the features shows here.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from rfau.data.base import to_float
from rfau.errors import ModelError
from rfau.train import predict_logits

AUC_FOLDS = 5
PROBE_FOLDS = 2
MEMBER_FPR = 0.10
MIN_CLASS_REFERENCE = 20  # fewer unseen samples of a class: the member attack uses the pooled threshold


class RelearnConfig(BaseModel):
    """The fixed relearn protocol (documented in the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(32, ge=1)
    max_samples: int = Field(256, ge=1)  # forget samples fine-tuned on and scored
    cap: int = Field(100, ge=1)  # at most this many steps
    seed: int = 0


# --- model outputs ---------------------------------------------------------------------------------


def output_layer(model: nn.Module) -> nn.Linear:
    """The classifier head: ``model.fc`` in rfau's architectures, else the last Linear module."""
    head = getattr(model, "fc", None)
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no Linear output layer to read features before")
    return linears[-1]


@torch.no_grad()
def logits_and_features(
    model: nn.Module, x: torch.Tensor, batch_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and penultimate features (the output layer's input), float32 on CPU, eval mode,
    for uint8 images: one ``predict_logits`` pass for both."""
    captured: list[torch.Tensor] = []
    hook = output_layer(model).register_forward_pre_hook(
        lambda _m, args: captured.append(args[0].float().cpu())
    )
    try:
        logits = predict_logits(model, x, batch_size)
    finally:
        hook.remove()
    return logits, torch.cat(captured) if captured else torch.empty(0)


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features (the input of the output layer) of uint8 images."""
    return logits_and_features(model, x)[1]


def sample_features(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-sample attack features: loss, true-label probability, logit margin, entropy."""
    logits = logits.float()
    logp = logits.log_softmax(1)
    rows = torch.arange(len(y))
    loss = -logp[rows, y]
    prob = logp[rows, y].exp()
    others = logits.clone()
    others[rows, y] = float("-inf")
    margin = logits[rows, y] - others.max(1).values
    entropy = -(logp.exp() * logp).sum(1)
    return torch.stack([loss, prob, margin, entropy], 1).double().numpy()


# --- forget vs unseen --------------------------------------------------------------------------------


def balanced_pairs(
    y_forget: torch.Tensor, y_reference: torch.Tensor, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into forget and reference with as many of each per class (a seeded draw)."""
    gen = torch.Generator().manual_seed(seed)
    pick_f, pick_r = [], []
    for c in y_forget.unique().tolist():
        f = (y_forget == c).nonzero().flatten()
        r = (y_reference == c).nonzero().flatten()
        n = min(len(f), len(r))
        pick_f.append(f[torch.randperm(len(f), generator=gen)[:n]])
        pick_r.append(r[torch.randperm(len(r), generator=gen)[:n]])
    if not pick_f:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(pick_f), torch.cat(pick_r)


def forget_vs_unseen_auc(
    logits_forget: torch.Tensor,
    y_forget: torch.Tensor,
    logits_reference: torch.Tensor,
    y_reference: torch.Tensor,
    seed: int = 0,
    folds: int = AUC_FOLDS,
    min_per_side: int = AUC_FOLDS,
) -> tuple[float | None, float | None, int]:
    """(mean AUC, std over folds, samples per side) of a logistic regression telling forget from
    reference samples, class-balanced, stratified k-fold CV; (None, None, n) when fewer than
    ``min_per_side`` (at least ``folds``) samples per side."""
    # scikit-learn (2-3 s to import) loads here, where an evaluation fits its first classifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fi, ri = balanced_pairs(y_forget, y_reference, seed)
    n = len(fi)
    if n < max(folds, min_per_side):
        return None, None, n
    x = np.concatenate(
        [
            sample_features(logits_forget[fi], y_forget[fi]),
            sample_features(logits_reference[ri], y_reference[ri]),
        ]
    )
    target = np.concatenate([np.ones(n), np.zeros(n)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_score(clf, x, target, cv=cv, scoring="roc_auc")
    return float(scores.mean()), float(scores.std()), n


def member_rate_at_fpr(
    logits_forget: torch.Tensor,
    y_forget: torch.Tensor,
    logits_reference: torch.Tensor,
    y_reference: torch.Tensor,
    fpr: float = MEMBER_FPR,
) -> float | None:
    """Percent of forget samples a per-class loss threshold calls member, the threshold set so
    that at most ``fpr`` of the reference (unseen) samples of that class are called member."""
    if not len(y_forget) or not len(y_reference):
        return None
    loss_f = F.cross_entropy(logits_forget.float(), y_forget, reduction="none")
    loss_r = F.cross_entropy(logits_reference.float(), y_reference, reduction="none")
    member = torch.zeros(len(y_forget), dtype=torch.bool)
    for c in y_forget.unique().tolist():
        ref = loss_r[y_reference == c]
        if len(ref) < MIN_CLASS_REFERENCE:
            ref = loss_r  # too few unseen samples of this class: the pooled threshold
        threshold = ref.sort().values[int(fpr * len(ref))]  # loss below it: member
        m = y_forget == c
        member[m] = loss_f[m] < threshold
    return float(100.0 * member.float().mean())


def member_rate_spread(n_forget: int, n_reference: int, fpr: float = MEMBER_FPR) -> float | None:
    """Standard deviation (percent points) of the member rate of forget samples that look unseen:
    the forget side's binomial error plus the threshold's, estimated from ``n_reference``."""
    if n_forget < 1 or n_reference < 1:
        return None
    return 100.0 * math.sqrt(fpr * (1 - fpr) * (1 / n_forget + 1 / n_reference))


# --- relearning -----------------------------------------------------------------------------------------


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float(100.0 * (model(x).argmax(1) == y).float().mean())


def uint8_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Percent accuracy (eval mode) on uint8 images, on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    acc = _accuracy(model, to_float(x.to(device)), y.to(device))
    model.train(was_training)
    return acc


def relearn_subset(n: int, cfg: RelearnConfig) -> torch.Tensor:
    """The forget samples used for relearning (a seeded draw of at most ``cfg.max_samples``)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))[: cfg.max_samples]


def relearn_steps(
    model: nn.Module,
    x_forget: torch.Tensor,
    y_forget: torch.Tensor,
    target_accuracy: float,
    cfg: RelearnConfig | None = None,
) -> int:
    """Fine-tuning steps (on the forget samples alone, train mode) until a copy of ``model``
    classifies at least ``target_accuracy`` percent of them correctly; ``cfg.cap`` when it never
    does within the cap. ``x_forget``: uint8 images, already the relearn subset."""
    cfg = cfg or RelearnConfig()
    device = next(model.parameters()).device
    work = copy.deepcopy(model)
    for p in work.parameters():
        p.requires_grad_(True)
    x, y = to_float(x_forget.to(device)), y_forget.to(device)
    if _accuracy(work, x, y) >= target_accuracy:
        return 0
    opt = torch.optim.SGD(work.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches: list[torch.Tensor] = []
    for step in range(1, cfg.cap + 1):
        if not batches:
            batches = list(torch.randperm(len(y), generator=gen).to(device).split(cfg.batch_size))
            if len(batches) > 1 and len(batches[-1]) == 1:
                batches.pop()  # a lone sample gives BatchNorm no batch statistics
        idx = batches.pop(0)
        work.train()
        loss = F.cross_entropy(work(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if _accuracy(work, x, y) >= target_accuracy:
            return step
    return cfg.cap


# --- linear probe ------------------------------------------------------------------------------------------


def probe_accuracy(
    features_train: torch.Tensor,
    y_train: torch.Tensor,
    features_eval: torch.Tensor,
    y_eval: torch.Tensor,
    eval_classes: list[int],
    seed: int = 0,
    folds: int = PROBE_FOLDS,
) -> float | None:
    """Percent accuracy of a linear probe on the eval samples of ``eval_classes``. The probe
    trains on ``features_train`` (unseen data of all classes, e.g. the holdout) plus the other
    folds of the eval set (stratified), so every class, forgotten ones included, is learnt
    from unseen samples; mean over folds. None without eval samples of those classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wanted = torch.isin(y_eval, torch.tensor(eval_classes))
    counts = torch.bincount(y_eval, minlength=int(y_eval.max()) + 1 if len(y_eval) else 0)
    if int(wanted.sum()) < folds or int(counts[counts > 0].min()) < folds:
        return None
    xe, ye = features_eval.double().numpy(), y_eval.numpy()
    xt, yt = features_train.double().numpy(), y_train.numpy()
    correct, total = 0, 0
    for fit_idx, score_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(xe, ye):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        probe.fit(np.concatenate([xt, xe[fit_idx]]), np.concatenate([yt, ye[fit_idx]]))
        score = score_idx[wanted.numpy()[score_idx]]
        correct += int((probe.predict(xe[score]) == ye[score]).sum())
        total += len(score)
    return float(100.0 * correct / total)


# --- all of it ----------------------------------------------------------------------------------------------


def unseen_reference(
    y_forget: torch.Tensor,
    holdout: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    forgotten_classes: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of unseen samples of the forget set's classes: holdout samples for kept
    classes, test samples for forgotten classes (the holdout has none of those)."""
    (lh, yh), (lt, yt) = holdout, test
    classes = set(y_forget.unique().tolist())
    gone = torch.tensor(sorted(set(forgotten_classes)), dtype=torch.long)
    from_holdout = torch.isin(yh, torch.tensor(sorted(classes - set(forgotten_classes)), dtype=torch.long))
    from_test = torch.isin(yt, gone)
    return torch.cat([lh[from_holdout], lt[from_test]]), torch.cat([yh[from_holdout], yt[from_test]])


def evidence_metrics(
    model: nn.Module,
    forget: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    holdout: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    forgotten_classes: list[int],
    reference_model: nn.Module | None = None,
    seed: int = 0,
    relearn: RelearnConfig | None = None,
) -> dict[str, Any]:
    """The evidence keys for one model. ``forget``: (uint8 images, logits, labels); ``holdout``
    and ``test``: (logits, penultimate features, labels). ``reference_model``: the model the
    deletion started from (original / champion); it sets the relearn target (its accuracy on the
    relearn samples); without it ``relearn_steps`` is None."""
    x_f, l_f, y_f = forget
    l_h, f_h, y_h = holdout
    l_t, f_t, y_t = test
    out: dict[str, Any] = {k: None for k in EVIDENCE_KEYS}
    if len(y_f):
        l_u, y_u = unseen_reference(y_f, (l_h, y_h), (l_t, y_t), forgotten_classes)
        auc, spread, n = forget_vs_unseen_auc(l_f, y_f, l_u, y_u, seed)
        out |= {"forget_vs_unseen_auc": auc, "forget_vs_unseen_auc_cv_std": spread, "forget_vs_unseen_n": n}
        same_classes = torch.isin(y_t, y_f.unique())
        auc, spread, n = forget_vs_unseen_auc(l_f, y_f, l_t[same_classes], y_t[same_classes], seed)
        out |= {"forget_vs_test_auc": auc, "forget_vs_test_auc_cv_std": spread, "forget_vs_test_n": n}
        out["forget_member_rate_at_10fpr"] = member_rate_at_fpr(l_f, y_f, l_u, y_u)
        out["forget_member_rate_at_10fpr_std"] = member_rate_spread(len(y_f), len(y_u))
        out["forget_member_rate_at_10fpr_test"] = member_rate_at_fpr(
            l_f, y_f, l_t[same_classes], y_t[same_classes]
        )
        out["forget_member_rate_at_10fpr_test_std"] = member_rate_spread(len(y_f), int(same_classes.sum()))
        if reference_model is not None:
            cfg = relearn or RelearnConfig(seed=seed)
            pick = relearn_subset(len(y_f), cfg)
            target = uint8_accuracy(reference_model, x_f[pick], y_f[pick])
            out["relearn_target_acc"] = target
            out["relearn_steps"] = relearn_steps(model, x_f[pick], y_f[pick], target, cfg)
    if forgotten_classes:
        out["probe_forgotten_class_acc"] = probe_accuracy(f_h, y_h, f_t, y_t, forgotten_classes, seed)
    return out


EVIDENCE_KEYS = (
    "forget_vs_unseen_auc",
    "forget_vs_unseen_auc_cv_std",
    "forget_vs_unseen_n",
    "forget_vs_test_auc",
    "forget_vs_test_auc_cv_std",
    "forget_vs_test_n",
    "forget_member_rate_at_10fpr",
    "forget_member_rate_at_10fpr_std",
    "forget_member_rate_at_10fpr_test",
    "forget_member_rate_at_10fpr_test_std",
    "relearn_steps",
    "relearn_target_acc",
    "probe_forgotten_class_acc",
)

__all__ = [
    "EVIDENCE_KEYS",
    "RelearnConfig",
    "evidence_metrics",
    "forget_vs_unseen_auc",
    "logits_and_features",
    "member_rate_at_fpr",
    "member_rate_spread",
    "penultimate",
    "probe_accuracy",
    "relearn_steps",
    "sample_features",
]
