"""Class-wise evidence: the forgotten classes' *trained* images against their *unseen* ones.

A class request forgets every training image of the class, the holdout draw included: those
images the original never trained on are the unseen reference an attacker compares with. The
same per-sample attack as the sample-wise evidence (``rfau.metrics.evidence``): a cross-validated
AUC on (loss, probability, margin, entropy) and a loss threshold at 10% FPR.
"""

from __future__ import annotations

from typing import Any

import torch

from rfau.metrics.evidence import (
    AUC_FOLDS,
    MEMBER_FPR,
    forget_vs_unseen_auc,
    member_rate_at_fpr,
    member_rate_spread,
)

# fewer unseen images of the forgotten classes per side and the AUC is not measured (at 5 per
# side each CV fold scores 1 against 1, an AUC of 0 or 1: retrain failed by chance)
MIN_CLASS_AUC_PER_SIDE = 2 * AUC_FOLDS


def classwise_evidence(
    forget: tuple[torch.Tensor, torch.Tensor],
    unseen: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor],
    seed: int = 0,
) -> dict[str, Any]:
    """The class-wise evidence keys (``CLASSWISE_KEYS``). ``forget``: logits and labels of the forget
    samples whose whole class goes; ``unseen``: which of them the model never trained on (the
    holdout draw of the class, in the forget set because the whole class goes); ``test``: logits
    and labels of the test samples of the forgotten classes. The trained images against the
    unseen ones (and against the test images) of the same classes: a model that never saw the
    class cannot tell them apart (AUC 0.5, member rate 10)."""
    (l_f, y_f), (l_t, y_t) = forget, test
    trained = ~unseen
    lt_f, yt_f, lu, yu = l_f[trained], y_f[trained], l_f[unseen], y_f[unseen]
    out: dict[str, Any] = {"forgotten_class_unseen_n": int(unseen.sum())}
    for key, (l_ref, y_ref) in (("unseen", (lu, yu)), ("test", (l_t, y_t))):
        auc, spread, n = forget_vs_unseen_auc(
            lt_f, yt_f, l_ref, y_ref, seed, min_per_side=MIN_CLASS_AUC_PER_SIDE
        )
        name = f"forgotten_class_trained_vs_{key}_auc"
        out |= {name: auc, f"{name}_cv_std": spread, f"{name}_n": n}
        rate = f"forgotten_class_member_rate_at_10fpr{'' if key == 'unseen' else '_test'}"
        # fewer unseen images than a 10% threshold needs (one below it): not measurable
        measurable = len(yt_f) > 0 and len(y_ref) >= 1 / MEMBER_FPR
        out[rate] = member_rate_at_fpr(lt_f, yt_f, l_ref, y_ref) if measurable else None
        out[f"{rate}_std"] = member_rate_spread(len(yt_f), len(y_ref)) if measurable else None
        out[f"{rate}_n"] = len(y_ref)
    return out


CLASSWISE_KEYS = (
    "forgotten_class_unseen_n",
    "forgotten_class_trained_vs_unseen_auc",
    "forgotten_class_trained_vs_unseen_auc_cv_std",
    "forgotten_class_trained_vs_unseen_auc_n",
    "forgotten_class_trained_vs_test_auc",
    "forgotten_class_trained_vs_test_auc_cv_std",
    "forgotten_class_trained_vs_test_auc_n",
    "forgotten_class_member_rate_at_10fpr",
    "forgotten_class_member_rate_at_10fpr_std",
    "forgotten_class_member_rate_at_10fpr_n",
    "forgotten_class_member_rate_at_10fpr_test",
    "forgotten_class_member_rate_at_10fpr_test_std",
    "forgotten_class_member_rate_at_10fpr_test_n",
)


__all__ = ["CLASSWISE_KEYS", "MIN_CLASS_AUC_PER_SIDE", "classwise_evidence"]
