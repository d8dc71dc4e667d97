"""Unlearning metrics in percent: UA, RA, TA, per-class accuracy, MIA-efficacy, avg gap, and the
per-sample evidence of ``rfau.metrics.evidence`` (forget vs unseen AUC, member rate, relearn steps,
linear probe), and for classes forgotten whole the same attack on their trained images against
their unseen ones (``rfau.metrics.classwise``).

Every evaluation records the split's ``regime`` (``rfau.data.split.forget_regime``: class, sample,
mixed or none), which the promotion gates read. A mixed split (whole classes and scattered
samples in one batch) also gets ``sample_part``: UA, MIA-efficacy and the sample-wise evidence
of its scattered samples alone, so the sample-wise gates judge them without the forgotten
classes' samples swamping them."""

from __future__ import annotations

import torch
from torch import nn

from rfau.data.base import Dataset
from rfau.data.split import Split, excluded_classes, forget_regime
from rfau.metrics.classwise import CLASSWISE_KEYS, classwise_evidence
from rfau.metrics.evidence import EVIDENCE_KEYS, RelearnConfig, evidence_metrics, logits_and_features
from rfau.metrics.mia import FEATURES, fit_attack, mia_efficacy, nonmember_share
from rfau.train import predict_logits

# evidence and mia fit scikit-learn classifiers (2-3 s to import): they import it in the functions
# that fit them, so that the batch stages and CLI processes that only train or unlearn (they
# import this package through rfau.stages) skip it

GAP_METRICS = ("ua", "ra", "ta", "mia_confidence")
# evidence keys a mixed split's sample part leaves out (it has no forgotten class and no relearn)
CLASSWISE_OR_RELEARN = ("relearn_steps", "relearn_target_acc", "probe_forgotten_class_acc")


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(100.0 * (logits.argmax(1) == y).float().mean()) if len(y) else float("nan")


def evaluate_model(
    model: nn.Module,
    ds: Dataset,
    split: Split,
    seed: int = 0,
    logits_out: dict | None = None,
    reference_model: nn.Module | None = None,
    relearn: RelearnConfig | None = None,
) -> dict:
    """All metrics for one model on one split (values in percent, AUCs in [0, 1]). ``logits_out``,
    when given, receives the retain/forget/test logits so that callers need not run the model
    again. ``reference_model``: the model the deletion started from (the original or the
    champion); it sets the relearn target, and without it ``relearn_steps`` is None."""
    parts = {}
    for name in ("retain", "forget"):
        idx = ds.indices(getattr(split, name))
        parts[name] = (predict_logits(model, ds.x[idx]), ds.y[idx])
    seen_never = {}  # holdout and test: logits and penultimate features in one pass
    for name in ("holdout", "test"):
        idx = ds.indices(getattr(split, name))
        seen_never[name] = (*logits_and_features(model, ds.x[idx]), ds.y[idx])
    parts["test"] = (seen_never["test"][0], seen_never["test"][2])
    if logits_out is not None:
        logits_out.update({name: parts[name][0] for name in ("retain", "forget", "test")})
    (lr, yr), (lf, yf), (lt, yt) = parts["retain"], parts["forget"], parts["test"]
    forgotten = [ds.classes.index(c) for c in split.forget_classes]
    # classes earlier batches forgot whole: neither kept nor unseen data of a kept class any more
    gone_before = torch.tensor([ds.classes.index(c) for c in excluded_classes(split, ds)], dtype=torch.long)
    live = ~torch.isin(yt, gone_before)  # the test images of the classes the model still serves
    kept = live & ~torch.isin(yt, torch.tensor(forgotten, dtype=torch.long))
    of_forget = torch.isin(yt, yf.unique())
    whole = torch.isin(yf, torch.tensor(forgotten, dtype=torch.long))  # forget samples of forgotten classes
    out = {
        "regime": forget_regime(split, ds),
        "ua": 100.0 - accuracy(lf, yf) if len(yf) else float("nan"),
        # the class-wise gate's own: accuracy on the forget samples whose whole class goes
        "forget_accuracy_forgotten_classes": accuracy(lf[whole], yf[whole]) if bool(whole.any()) else None,
        "ra": accuracy(lr, yr),
        "ta": accuracy(lt, yt),
        "ta_kept_classes": accuracy(lt[kept], yt[kept]),
        "ta_forgotten_classes": accuracy(lt[live & ~kept], yt[live & ~kept]) if forgotten else None,
        # test accuracy on the classes the forget samples belong to: collateral damage to a class
        "ta_forget_sample_classes": accuracy(lt[of_forget], yt[of_forget]) if len(yf) else None,
        "per_class_test_accuracy": {
            ds.classes[c]: accuracy(lt[yt == c], yt[yt == c]) for c in range(len(ds.classes))
        },
        "forget_confidence_mean": float(lf.softmax(1)[torch.arange(len(yf)), yf].mean()) if len(yf) else None,
        "test_confidence_mean": float(lt.softmax(1)[torch.arange(len(yt)), yt].mean()),
        "counts": {"retain": len(yr), "forget": len(yf), "test": len(yt)},
    }
    x_forget = ds.x[ds.indices(split.forget)]
    out |= evidence_metrics(
        model,
        (x_forget, lf, yf),
        seen_never["holdout"],
        seen_never["test"],
        forgotten,
        reference_model,
        seed,
        relearn,
    )
    out |= dict.fromkeys(CLASSWISE_KEYS)  # None: no class forgotten whole
    if bool(whole.any()):  # the forgotten classes' trained images against their unseen ones
        unseen = torch.tensor([split.is_holdout(s) for s in split.forget], dtype=torch.bool)
        gone = live & ~kept
        out |= classwise_evidence((lf[whole], yf[whole]), unseen[whole], (lt[gone], yt[gone]), seed)
    attacks = {}
    for kind in FEATURES:  # non-members: the test images of the classes the model still serves
        clf = attacks[kind] = fit_attack(lr, yr, lt[live], yt[live], kind, seed)
        out[f"mia_{kind}"] = nonmember_share(clf, lf, yf, kind) if len(yf) else float("nan")
        # the same attack on the test set itself: what "looks unseen" scores (a gate reference)
        out[f"mia_{kind}_test"] = nonmember_share(clf, lt[live], yt[live], kind)
        if split.excluded:  # forgotten by earlier batches: they must stay forgotten
            idx = ds.indices(split.excluded)
            le, ye = predict_logits(model, ds.x[idx]), ds.y[idx]
            out["ua_excluded"] = 100.0 - accuracy(le, ye)
            out[f"mia_{kind}_excluded"] = nonmember_share(clf, le, ye, kind)
    if out["regime"] == "mixed":
        scattered = ~whole
        part = evidence_metrics(
            model,
            (x_forget[scattered], lf[scattered], yf[scattered]),
            seen_never["holdout"],
            seen_never["test"],
            [],
            seed=seed,
        )
        out["sample_part"] = {
            "ua": 100.0 - accuracy(lf[scattered], yf[scattered]),
            "mia_confidence": nonmember_share(
                attacks["confidence"], lf[scattered], yf[scattered], "confidence"
            ),
            # what "looks unseen" scores: the test samples of the kept classes
            "mia_confidence_test": nonmember_share(attacks["confidence"], lt[kept], yt[kept], "confidence"),
            "counts": {"forget": int(scattered.sum())},
            **{k: v for k, v in part.items() if k not in CLASSWISE_OR_RELEARN},
        }
    return out


def avg_gap(metrics: dict, reference: dict, keys: tuple[str, ...] = GAP_METRICS) -> float:
    """Mean absolute difference to the reference (retrain) over UA, RA, TA, MIA-efficacy."""
    return sum(abs(metrics[k] - reference[k]) for k in keys) / len(keys)


__all__ = [
    "EVIDENCE_KEYS",
    "GAP_METRICS",
    "RelearnConfig",
    "accuracy",
    "avg_gap",
    "evaluate_model",
    "mia_efficacy",
]
