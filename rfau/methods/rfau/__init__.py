"""Residual Feature Alignment Unlearning (RFAU) with LoRA adapters (peft).

The original model f0 is frozen; LoRA adapters on named target modules add a residual to every
tapped feature, ``h_l(x) = h_l^0(x) + r_l(x)``. Training asks for:

- retain: a *zero residual*, ``sum_l ||h_l(x_r) - h_l^0(x_r)||^2 / E||h_l^0||^2`` on a cached
  budget of retain samples (original features computed once);
- forget, class-wise (the sample's whole class goes), one of three targets
  (``classwise_target``): the original's output with the class removed (``masked_output``); the
  tapped features of random retain samples of other classes; or, the default, each sample's
  tapped features carried from its class's centroid to the centroid of the kept class the
  original ranks next for it, its own deviation shrunk by ``shift_keep`` (``centroid_shift``):
  the class is then unreadable in the features (a linear probe), not only in the output.
  When the whole request is class-wise, the forget samples the original never saw (the holdout
  slice's images of the class) get no forget loss: they are an unseen reference, and training
  stops at the first epoch where no forget sample is recognised any more (what retraining
  gives: a model that never saw the class never predicts it) and the trained forget samples'
  median loss has reached the reference's (``unseen_stop``). Fitting the forget samples beyond
  that point gives them a higher loss than unseen images of the class (the "Streisand" mark).
  Without enough such samples it stops on the first condition alone;
- forget, sample-wise (scattered samples): a residual that makes the samples look *unseen*, not
  wrong. Per class, forget samples are ranked by the original model's margin and matched with
  the holdout sample (data the model never saw) at the same quantile of true-label confidence;
  the output-layer target takes that sample's confidence and off-class profile, and the loss is
  KL(target || model). The share pushed below the decision boundary then equals the error rate
  on unseen data, which is what retraining produces; a wrong-class shift would over-forget.
"""

from rfau.methods.rfau.config import (
    LORA_TYPES,
    MIN_HOLDOUT_PER_CLASS,
    MIN_UNSEEN_REFERENCE,
    RFAU_DEFAULTS,
    RFAUConfig,
    lora_config,
)
from rfau.methods.rfau.features import (
    OriginalFeatures,
    Taps,
    cache_original,
    resolve_modules,
    run_from,
    run_to,
)
from rfau.methods.rfau.losses import anchor_weights, feature_shift_loss, output_kl_loss, zero_residual_loss
from rfau.methods.rfau.method import RFAU
from rfau.methods.rfau.selection import (
    Snapshots,
    histogram_weights,
    ks_critical,
    ks_distance,
    sample_losses,
    unseen_distance,
)
from rfau.methods.rfau.targets import (
    calibrated_targets,
    centroid_shift_targets,
    class_mean_targets,
    class_means,
    class_prior_targets,
    forgotten_like,
    masked_targets,
    output_targets,
    regime_mask,
    unseen_loss_targets,
    unseen_reference,
)

__all__ = [
    "LORA_TYPES",
    "MIN_HOLDOUT_PER_CLASS",
    "MIN_UNSEEN_REFERENCE",
    "OriginalFeatures",
    "RFAU",
    "RFAUConfig",
    "RFAU_DEFAULTS",
    "Snapshots",
    "Taps",
    "anchor_weights",
    "cache_original",
    "calibrated_targets",
    "centroid_shift_targets",
    "class_mean_targets",
    "class_means",
    "class_prior_targets",
    "feature_shift_loss",
    "forgotten_like",
    "histogram_weights",
    "ks_critical",
    "ks_distance",
    "lora_config",
    "masked_targets",
    "output_kl_loss",
    "output_targets",
    "regime_mask",
    "resolve_modules",
    "run_from",
    "run_to",
    "sample_losses",
    "unseen_distance",
    "unseen_loss_targets",
    "unseen_reference",
    "zero_residual_loss",
]
