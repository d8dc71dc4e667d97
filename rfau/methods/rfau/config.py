"""The settings of RFAU (pydantic, with help text) and the peft LoraConfig they give."""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator
from torch import nn

from rfau.methods.base import MethodConfig
from rfau.models.families import NATIVE_DEFAULTS
from rfau.models.families import ModuleDefaults as RFAUModules

if TYPE_CHECKING:  # peft (and the transformers it imports) costs seconds: loaded when RFAU runs
    from peft import LoraConfig

LORA_TYPES = (nn.Linear, nn.Conv2d)


MIN_HOLDOUT_PER_CLASS = 20  # below this a class's holdout is too thin; use the whole holdout


MIN_UNSEEN_REFERENCE = 10  # fewer class-wise forget samples the original never saw: no early stop


# Default modules per rfau architecture (as peft's target_module_mapping); every model family
# keeps its own (rfau.models.families: default_modules).
RFAU_DEFAULTS: dict[str, RFAUModules] = NATIVE_DEFAULTS


_DEFAULTS_HELP = (
    "; ".join(
        f"{arch}: targets {', '.join(m.targets)}, taps {', '.join(m.taps)}"
        for arch, m in RFAU_DEFAULTS.items()
    )
    + "; transformers models: attention query/value (peft's defaults per model type)"
)


class RFAUConfig(MethodConfig):
    """Residual Feature Alignment Unlearning: LoRA on a frozen model, zero/shifted residuals."""

    rank: int = Field(4, ge=1, description="LoRA rank r")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha (the residual is scaled by alpha / rank)")
    target_modules: list[str] | None = Field(
        None,
        description="modules that get LoRA adapters, by full name or by last part (query names every "
        f"...query); None: the model family's ({_DEFAULTS_HELP})",
    )
    taps: list[str] | None = Field(
        None,
        description="layers whose outputs are aligned (the output layer is always added); None: as above",
    )
    regime: Literal["auto", "class", "sample"] = Field(
        "auto", description="auto: class-wise for samples whose whole class is forgotten, else sample-wise"
    )
    classwise_target: Literal["masked_output", "other_class_features", "centroid_shift", "class_prior"] = (
        Field(
            "centroid_shift",
            description="class-wise shift: the original's output with the forgotten classes removed; the "
            "tapped features of random retain samples of other classes; each sample's tapped features "
            "moved from its class's centroid to that of the kept class the original ranks next for it; or "
            "one output distribution per forgotten class (the class's mean masked output, see prior_tilt)",
        )
    )
    prior_tilt: float = Field(
        1.0,
        gt=0,
        description="class_prior: power applied to the class's mean masked output before renormalising "
        "(> 1 tilts the target toward the classes the original confuses the class with)",
    )
    reference_in_loss: bool = Field(
        False,
        description="class-wise requests: the forgotten classes' images the original never saw get the "
        "same forget loss as the trained ones (they still serve as the stop's unseen reference); off: "
        "no forget loss on them",
    )
    classwise_stop: Literal["median", "ks"] = Field(
        "median",
        description="unseen_stop's second condition: the trained images' median loss reaches the unseen "
        "reference's (median), or that or a two-sample KS test at level ks_alpha that cannot tell their "
        "loss distributions apart (ks)",
    )
    ks_alpha: float = Field(0.05, gt=0, lt=1, description="level of classwise_stop's KS test")
    sample_target: Literal["quantile", "class_mean"] = Field(
        "quantile",
        description="sample-wise targets: the holdout output at the sample's confidence quantile "
        "(quantile), or the original's mean output over the holdout images of the sample's class "
        "(class_mean)",
    )
    select_snapshot: bool = Field(
        False,
        description="keep the adapters of each epoch and return those whose forget-set loss distribution "
        "is closest (KS) to the unseen reference's (class-wise: the class's unseen images, none still "
        "recognised; sample-wise: the holdout, weighted to the forget set's class histogram); training "
        "ends select_patience epochs after the closest one; replaces unseen_stop",
    )
    select_patience: int = Field(5, ge=1, description="select_snapshot: epochs without a closer snapshot")
    loss_match: float = Field(
        0.1,
        ge=0,
        description="class-wise requests with an unseen reference: weight of a term that gives each "
        "trained image the loss at its own quantile of the unseen images' current losses (recomputed "
        "each epoch; those still recognised left out), so that the two loss distributions match in "
        "shape and not only in their medians (0: off)",
    )
    loss_match_split: bool = Field(
        False,
        description="loss_match: split the class's unseen images in two halves (per class, at random); "
        "the loss targets read one, the stop rule (unseen_stop) the other, so the stop is not judged on "
        "the images the loss fits",
    )
    forget_passes: float = Field(
        1.0,
        ge=0,
        description="at least this many passes over the forget set per epoch (the retain budget is "
        "cycled to fill the extra steps), so that a large forget set is not under-visited at a fixed "
        "retain budget (the cost then grows with the forget set, not the retain set); 0: the retain "
        "budget's steps only, whatever the forget set's size",
    )
    release_neighbours: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="sample-wise requests: share of the retain budget nearest to the forget samples (in "
        "the penultimate tapped features) left out of the retain batches, so that the zero residual "
        "does not hold the forget set's neighbourhood in place (0: none)",
    )
    shift_keep: float = Field(
        0.5,
        ge=0,
        le=1,
        description="centroid_shift: share of a sample's deviation from its class centroid kept at "
        "the new centroid (1: a translation; 0: every sample onto the centroid)",
    )
    unseen_stop: bool = Field(
        True,
        description="class-wise requests: stop at the first epoch where no forget sample is recognised "
        "and the trained ones' median loss has reached that of the forget samples the original never "
        f"saw, held out of the loss as the unseen reference (fewer than {MIN_UNSEEN_REFERENCE} of them: "
        "no reference, the first condition alone)",
    )
    epochs: int = Field(30, ge=1, description="passes over the retain budget (at most)")
    retain_budget: int = Field(5000, ge=1, description="retain samples cached and visited per epoch")
    batch_size: int = Field(128, ge=1, description="retain samples per step")
    forget_batch_size: int = Field(64, ge=1, description="forget samples per step (the forget set is cycled)")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate of the adapters")
    forget_weight: float = Field(1.0, ge=0, description="weight of the forget loss against the retain loss")
    class_anchor: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of the retain batches' sampling weight moved onto the classes of the forget "
        "samples, in proportion to each class's share of the forget set (0: uniform); holds those "
        "classes' kept samples in place against collateral damage",
    )
    calibration_pool: float = Field(
        1.0,
        ge=0,
        le=1,
        description="sample-wise targets: share of the whole holdout in each class's unseen reference "
        "(0: the class's own holdout slice only, small and noisy; 1: the whole holdout)",
    )

    @field_validator("target_modules", "taps", mode="before")
    @classmethod
    def _comma_separated(cls, v: object) -> object:
        """``--set target_modules=query,value`` as well as a JSON list."""
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> RFAUConfig:
        for field in ("target_modules", "taps"):
            names = getattr(self, field)
            if names is not None and not names:
                raise ValueError(f"{field} is empty; leave it unset for the architecture's defaults")
            if names is not None and len(set(names)) < len(names):
                raise ValueError(f"{field} names a module twice: {names}")
        if self.forget_weight == 0:
            warnings.warn(
                "rfau: forget_weight=0 trains a zero residual only; nothing is forgotten", stacklevel=2
            )
        if self.regime == "sample" and "classwise_target" in self.model_fields_set:
            warnings.warn("rfau: classwise_target has no effect with regime='sample'", stacklevel=2)
        if self.loss_match_split and self.loss_match == 0:
            warnings.warn("rfau: loss_match_split has no effect with loss_match=0", stacklevel=2)
        if "shift_keep" in self.model_fields_set and self.classwise_target != "centroid_shift":
            warnings.warn(
                "rfau: shift_keep has no effect unless classwise_target='centroid_shift'", stacklevel=2
            )
        return self


def lora_config(cfg: RFAUConfig, targets: list[str]) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # peft computes alpha / r in float
        lora_dropout=0.0,
        bias="none",
        target_modules="^(" + "|".join(re.escape(t) for t in targets) + ")$",
    )
