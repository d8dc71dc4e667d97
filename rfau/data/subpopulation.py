"""A structured, non-random forget set: a sub-population of one class, as in worst-case unlearning.

Random forget sets are the easy case: every forgotten sample keeps look-alikes in the retain set,
so retraining barely changes their predictions. The field's worst cases are coherent
sub-populations of hard samples (Fan et al., ECCV 2024, "Challenging Forgets": the worst-case
forget sets found by bi-level selection concentrate on a few classes and on hard samples; Zhao
et al., NeurIPS 2024: forget sets entangled with the retain set in feature space and highly
memorised are the hardest). The rule here, cheap and deterministic:

1. the class's training samples the original trained on (the holdout slice left out);
2. their penultimate features under the original, standardised; k-means with k=3 (seeded);
3. the cluster whose members the original separates worst (lowest mean true-label logit margin):
   the hardest mode of the class;
4. forget = the ``share`` (default 30%) of the class's samples nearest to that cluster's centre.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler
from torch import nn

from rfau.data.base import Dataset
from rfau.data.split import HOLDOUT_FRACTION, HOLDOUT_SALT, in_holdout
from rfau.errors import RfauError
from rfau.metrics.evidence import logits_and_features, sample_features

CLUSTERS = 3
SHARE = 0.3


def subpopulation_forget_set(
    ds: Dataset,
    model: nn.Module,
    forget_class: str,
    share: float = SHARE,
    seed: int = 0,
    holdout_fraction: float = HOLDOUT_FRACTION,
    holdout_salt: str = HOLDOUT_SALT,
) -> list[str]:
    """Ids of the sub-population of ``forget_class`` chosen by the module's rule (sorted)."""

    if forget_class not in ds.classes:
        raise RfauError(f"unknown class {forget_class!r}; known: {', '.join(ds.classes)}")
    if not 0 < share < 1:
        raise RfauError(f"share must be in (0, 1), got {share}")
    c = ds.classes.index(forget_class)
    ids = [
        s
        for s in ds.split_ids("train")
        if ds.class_of(s) == forget_class and not in_holdout(s, holdout_fraction, holdout_salt)
    ]
    if len(ids) < 2 * CLUSTERS:
        raise RfauError(
            f"class {forget_class!r} has {len(ids)} training samples: too few for a sub-population"
        )
    logits, feats = logits_and_features(model, ds.x[ds.indices(ids)])
    z = StandardScaler().fit_transform(feats.double().numpy())
    km = KMeans(n_clusters=CLUSTERS, n_init=4, random_state=seed).fit(z)
    margin = sample_features(logits, torch.full((len(ids),), c, dtype=torch.long))[:, 2]
    hardest = min(range(CLUSTERS), key=lambda k: margin[km.labels_ == k].mean())
    dist = np.linalg.norm(z - km.cluster_centers_[hardest], axis=1)
    k = max(1, round(share * len(ids)))
    return sorted(ids[i] for i in np.argsort(dist, kind="stable")[:k])


__all__ = ["SHARE", "subpopulation_forget_set"]
