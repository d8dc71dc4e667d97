"""Where the forget samples go: the forget targets, the regime mask and the unseen reference of
the class-wise early stop (pure functions of tensors and the cached original features)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rfau.errors import ModelError
from rfau.methods.base import UnlearnData
from rfau.methods.rfau.config import MIN_HOLDOUT_PER_CLASS, MIN_UNSEEN_REFERENCE
from rfau.methods.rfau.features import OriginalFeatures
from rfau.methods.rfau.selection import ks_critical, ks_distance
from rfau.train import predict_logits


def unseen_reference(data: UnlearnData, classwise: torch.Tensor) -> torch.Tensor | None:
    """The forget samples held out as the unseen reference: those the original never saw, when
    every forget sample is forgotten class-wise and there are enough of them; else None."""
    if data.forget_unseen is None or not bool(classwise.all()):
        return None
    ref = data.forget_unseen  # every row is class-wise here
    return ref if int(ref.sum()) >= MIN_UNSEEN_REFERENCE else None


def forgotten_like(
    logits: torch.Tensor,
    y: torch.Tensor,
    reference: torch.Tensor | None,
    rule: str = "median",
    alpha: float = 0.05,
    trained: torch.Tensor | None = None,
) -> bool:
    """The stop rule on outputs: no forget row predicted as its class (what retraining gives: a
    model that never saw the class never predicts it) and, with a reference, the median loss of
    the other rows at least the reference rows' median loss; with ``rule="ks"`` also as soon as
    a two-sample KS test at level ``alpha`` cannot tell the two loss distributions apart.
    ``trained``: the rows compared with the reference (default: every row not in it)."""
    if bool((logits.argmax(1) == y).any()):
        return False
    if reference is None:
        return True
    loss = F.cross_entropy(logits, y, reduction="none")
    trained_rows = ~reference if trained is None else trained
    trained, unseen = loss[trained_rows], loss[reference]
    if bool(trained.median() >= unseen.median()):
        return True  # past this point more training only separates them the other way
    if rule == "ks":
        return ks_distance(trained, unseen) <= ks_critical(len(trained), len(unseen), alpha)
    return False


def class_prior_targets(
    logits_f: torch.Tensor, y_f: torch.Tensor, forgotten: torch.Tensor, tilt: float = 1.0
) -> torch.Tensor:
    """One target distribution per forgotten class, the same for its trained and unseen images:
    the mean over the class's forget rows of the original's output with every forgotten class
    removed and the rest renormalised (what a model that never learned the class predicts for
    it), raised to the power ``tilt`` and renormalised (> 1 tilts it toward the classes the
    original confuses the class with most)."""
    z = logits_f.float().clone()
    z[:, forgotten] = float("-inf")
    p = z.softmax(1)
    q = torch.zeros_like(p)
    for k in y_f.unique():
        rows = y_f == k
        m = p[rows].mean(0).pow(tilt)
        q[rows] = m / m.sum()
    return q


def class_mean_targets(y_f: torch.Tensor, logits_h: torch.Tensor, y_h: torch.Tensor, c: int) -> torch.Tensor:
    """Sample-wise targets: each forget sample gets the original's mean output over the holdout
    images of its class (unseen data of its kind; a forget batch then matches the mean output of
    holdout images drawn with its class histogram); a class without holdout images gets the
    whole holdout's mean."""
    if len(y_h) == 0:
        raise ModelError("sample-wise forgetting needs holdout data (holdout_fraction > 0)")
    p_h = logits_h.float().softmax(1)
    pooled = p_h.mean(0)
    q = torch.zeros(len(y_f), c)
    for k in y_f.unique():
        own = y_h == k
        q[y_f == k] = p_h[own].mean(0) if bool(own.any()) else pooled
    return q


def calibrated_targets(
    logits_f: torch.Tensor,
    y_f: torch.Tensor,
    logits_h: torch.Tensor,
    y_h: torch.Tensor,
    pool: float = 1.0,
) -> torch.Tensor:
    """Target output distributions that make forget samples look like unseen (holdout) data.

    Per class, the forget sample at rank u (by the original's margin) is matched with the
    holdout sample at quantile u (by true-label confidence) of that class's unseen reference:
    the class's own holdout samples with weight ``1 - pool`` mixed with the whole holdout with
    weight ``pool`` (the whole holdout alone for a class with fewer than
    ``MIN_HOLDOUT_PER_CLASS`` holdout samples). The target takes the matched sample's whole
    output profile: its true-label confidence, and its off-class probabilities in descending
    order, placed on the forget sample's own off-classes in the original's order. Confidence,
    entropy and correctness (so the error rate) follow the unseen data.
    """
    if len(y_h) == 0:
        raise ModelError("sample-wise forgetting needs holdout data (holdout_fraction > 0)")
    n, c = logits_f.shape
    ar = torch.arange(n)
    p_h = logits_h.softmax(1)
    conf_h = p_h[torch.arange(len(y_h)), y_h]
    off = logits_f.clone()
    off[ar, y_f] = float("-inf")
    margin = logits_f[ar, y_f] - off.logsumexp(1)  # no saturation, unlike confidence
    by_conf = conf_h.argsort()
    matched = torch.empty(n, dtype=torch.long)
    for k in y_f.unique():
        idx = (y_f == k).nonzero().squeeze(1)
        own = (y_h == k).float()
        share = pool if own.sum() >= MIN_HOLDOUT_PER_CLASS else 1.0
        weight = share / len(y_h) + (1 - share) * own / own.sum().clamp_min(1)
        ref = by_conf[weight[by_conf] > 0]  # the reference's samples, least confident first
        cdf = weight[ref].double().cumsum(0) / weight[ref].double().sum()
        u = (margin[idx].argsort().argsort().double() + 0.5) / len(idx)
        matched[idx] = ref[torch.searchsorted(cdf, u).clamp_max(len(ref) - 1)]  # its u-quantile
    p_m, y_m = p_h[matched], y_h[matched]
    p_off = p_m.clone()
    p_off[ar, y_m] = -1.0
    off_sorted = p_off.sort(1, descending=True).values[:, : c - 1]  # holdout profile, off-class
    order = off.argsort(1, descending=True)[:, : c - 1]  # forget sample's off-classes, best first
    q = torch.zeros(n, c)
    q[ar, y_f] = p_m[ar, y_m]
    q.scatter_(1, order, off_sorted)
    return q


def centroid_shift_targets(
    orig: OriginalFeatures, data: UnlearnData, classwise: torch.Tensor, keep: float
) -> list[torch.Tensor]:
    """Class-wise feature targets (``centroid_shift``), per tap: ``mu[dest] + keep * (h - mu[y])``
    with ``h`` the sample's original features, ``mu[y]`` its forgotten class's centroid (over the
    class-wise forget rows), ``mu[dest]`` the retain-budget centroid of the kept class with the
    original's highest logit for the sample. Rows of sample-wise forgetting get their own
    features (they are masked out of this loss)."""
    rows, y_f = classwise.to(orig.feats_f[0].device), data.y_forget.to(orig.feats_f[0].device)
    c = data.num_classes
    present = torch.bincount(orig.y_r, minlength=c) > 0
    ranked = orig.logits_f.clone()
    ranked[:, ~present] = float("-inf")  # forgotten classes have no retain sample
    ranked[:, data.y_forget[classwise].unique()] = float("-inf")
    dest = ranked.argmax(1).to(y_f.device)
    out = []
    for fr, ff in zip(orig.feats_r, orig.feats_f):
        fr, ff = fr.float(), ff.float()
        mu = class_means(fr, orig.y_r.to(fr.device), c)
        mu_forgotten = class_means(ff[rows], y_f[rows], c)
        mu = torch.where(torch.isnan(mu_forgotten[:, :1]), mu, mu_forgotten)
        moved = mu[dest] + keep * (ff - mu[y_f])
        out.append(torch.where(rows[:, None], moved, ff))
    return out


def class_means(x: torch.Tensor, y: torch.Tensor, c: int) -> torch.Tensor:
    """[c, dim] mean of the rows of each class; NaN for a class with no row."""
    sums = torch.zeros(c, x.shape[1], device=x.device).index_add_(0, y, x)
    counts = torch.bincount(y, minlength=c).to(x.dtype)
    return sums / counts[:, None]  # 0 / 0 = NaN marks an absent class


def masked_targets(logits_f: torch.Tensor, y_f: torch.Tensor, forgotten: torch.Tensor) -> torch.Tensor:
    """Class-wise targets: the original's output with the sample's own class and every forgotten
    class removed and the rest renormalised: what a model that never saw those classes predicts."""
    z = logits_f.clone()
    z[:, forgotten] = float("-inf")
    z[torch.arange(len(y_f)), y_f] = float("-inf")
    return z.softmax(1)


def output_targets(
    frozen: nn.Module,
    data: UnlearnData,
    logits_f: torch.Tensor,
    classwise: torch.Tensor,
    classwise_target: str,
    pool: float = 1.0,
    sample_target: str = "quantile",
    tilt: float = 1.0,
) -> torch.Tensor:
    """Target output distribution of the forget samples (``logits_f``: the original's outputs);
    rows of samples that get no output-level shift stay zero and are masked out of the loss."""
    n, c = len(data.y_forget), data.num_classes
    q = torch.zeros(n, c)
    sw = (~classwise).nonzero().squeeze(1)
    cw = classwise.nonzero().squeeze(1)
    if len(sw):
        logits_h = predict_logits(frozen, data.x_holdout)
        if sample_target == "class_mean":
            q[sw] = class_mean_targets(data.y_forget[sw], logits_h, data.y_holdout, c)
        else:
            q[sw] = calibrated_targets(logits_f[sw], data.y_forget[sw], logits_h, data.y_holdout, pool)
    if len(cw) and classwise_target in ("masked_output", "class_prior"):
        forgotten = data.y_forget[data.forget_classwise].unique()  # whole classes the request names
        if len(forgotten) >= c:
            raise ModelError("class-wise forgetting of every class leaves nothing to predict")
        if classwise_target == "masked_output":
            q[cw] = masked_targets(logits_f[cw], data.y_forget[cw], forgotten)
        else:
            q[cw] = class_prior_targets(logits_f[cw], data.y_forget[cw], forgotten, tilt)
    return q.to(next(frozen.parameters()).device)


def split_reference(reference: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One half of each class's reference rows, drawn at random (the other half: ``reference &
    ~half``); a class with an odd count gives the extra row to the other half."""
    half = torch.zeros_like(reference)
    for k in y[reference].unique():
        rows = (reference & (y == k)).nonzero().squeeze(1)
        half[rows[torch.randperm(len(rows), generator=gen)[: len(rows) // 2]]] = True
    return half


def regime_mask(forget_classwise: torch.Tensor, regime: str) -> torch.Tensor:
    """Which forget samples are forgotten class-wise: as the request says (auto), or all/none."""
    if regime == "class":
        return torch.ones_like(forget_classwise)
    if regime == "sample":
        return torch.zeros_like(forget_classwise)
    return forget_classwise.clone()


def unseen_loss_targets(
    loss: torch.Tensor,
    y: torch.Tensor,
    reference: torch.Tensor,
    recognised: torch.Tensor | None = None,
    fit: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class-wise loss targets (``loss_match``): per class, the trained rows ranked by their
    current loss get the loss at the same quantile of the unseen reference rows' current losses,
    so that the trained images' loss distribution takes the unseen images' shape, not only their
    median; NaN for the reference rows and classes without a reference. Reference rows still
    ``recognised`` (predicted as their class) are left out: a model that never saw the class
    never predicts it, so no trained image is pulled back to a recognised loss. ``fit``: the
    reference rows whose losses are read (default: all of them; e.g. one half, the other left to
    the stop rule)."""
    out = torch.full_like(loss, float("nan"))
    usable = reference if fit is None else reference & fit
    usable = usable if recognised is None else usable & ~recognised
    for k in y.unique():
        ref = loss[usable & (y == k)].sort().values
        rows = (~reference & (y == k)).nonzero().squeeze(1)
        if len(ref) == 0 or len(rows) == 0:
            continue
        u = (loss[rows].argsort().argsort().double() + 0.5) / len(rows)
        out[rows] = ref[(u * len(ref)).long().clamp_max(len(ref) - 1)]
    return out
