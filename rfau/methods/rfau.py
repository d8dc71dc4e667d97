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

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from rfau.errors import ModelError, ModelSettingsError
from rfau.methods.base import MethodConfig, UnlearnData
from rfau.methods.runner import EpochMethod, Step, frozen_copy
from rfau.models.families import NATIVE_DEFAULTS, default_modules, expand_module_names
from rfau.models.families import ModuleDefaults as RFAUModules
from rfau.models.families import prefix as frozen_prefix
from rfau.train import autocast, even_batches, inference_batch, predict_logits, to_float

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
    classwise_target: Literal["masked_output", "other_class_features", "centroid_shift"] = Field(
        "centroid_shift",
        description="class-wise shift: the original's output with the forgotten classes removed; the "
        "tapped features of random retain samples of other classes; or each sample's tapped features "
        "moved from its class's centroid to that of the kept class the original ranks next for it",
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
        if "shift_keep" in self.model_fields_set and self.classwise_target != "centroid_shift":
            warnings.warn(
                "rfau: shift_keep has no effect unless classwise_target='centroid_shift'", stacklevel=2
            )
        return self


class RFAU(EpochMethod):
    name = "rfau"
    libraries = ("peft",)
    summary = "LoRA residual feature alignment (this project)"
    config = RFAUConfig
    cfg: RFAUConfig
    logged = ("retain_loss", "forget_loss")
    train_mode = False  # frozen BatchNorm statistics: the residual comes from the adapters only

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Step:
        """The RFAU objective for one step: a retain batch and a forget batch go through the
        adapted model together; the tapped features give

            retain  = zero_residual_loss (adapted features equal the original's on retain data)
            forget  = feature_shift_loss  on class-wise rows (feature targets: centroid_shift,
                                          other_class_features)
                    + output_kl_loss      on the other rows (calibrated or class-masked targets)
                    (rows of the unseen reference, if any, in neither)
            loss    = retain + forget_weight * forget
        """
        ri, fi_cpu = batch
        o, device = self.orig, self.device
        shift_rows, kl_rows = self.shift_rows[fi_cpu], self.kl_rows[fi_cpu]  # CPU: no device sync
        fi = fi_cpu.to(device)
        with autocast(device):
            run_from(self.inner, torch.cat([o.h_r[ri], o.h_f[fi]]), o.cut)
        hs = self.hooks.features()
        nr = len(ri)
        retain = zero_residual_loss([h[:nr] for h in hs], [f[ri] for f in o.feats_r], o.scales)
        forget = torch.zeros((), device=device)
        if bool(shift_rows.any()):
            if self.shift_to is not None:  # fixed per sample (centroid_shift)
                shifted = [t[fi] for t in self.shift_to]
            else:  # features of random retain samples (of other classes)
                pick = torch.randint(0, len(o.h_r), (len(fi),), generator=self.gen).to(device)
                shifted = [f[pick] for f in o.feats_r]
            forget = forget + feature_shift_loss(
                [h[nr:] for h in hs], shifted, o.scales, shift_rows.to(device)
            )
        if bool(kl_rows.any()):
            forget = forget + output_kl_loss(self.q_out[fi], hs[-1][nr:], kl_rows.to(device))
        objective = retain + self.cfg.forget_weight * forget
        return Step(objective, {"retain_loss": retain, "forget_loss": forget})

    def working_copy(self, model: nn.Module) -> nn.Module:
        """peft LoRA adapters on a copy of the model (the caller's model is left as it is), and a
        frozen copy that gives the original features."""
        from peft import get_peft_model

        self.targets, self.taps = resolve_modules(model, self.cfg)
        self.frozen = frozen_copy(model, self.device)
        return get_peft_model(copy.deepcopy(model).to(self.device), lora_config(self.cfg, self.targets))

    def setup(self, work: nn.Module) -> torch.optim.Optimizer:
        from peft import PeftModel

        cfg, data = self.cfg, self.data
        assert isinstance(work, PeftModel)
        inner = work.base_model.model
        assert isinstance(inner, nn.Module)
        self.inner = inner
        classwise = regime_mask(data.forget_classwise, cfg.regime)
        self.orig = cache_original(self.frozen, data, self.targets + self.taps, self.taps, cfg, self.gen)
        self.q_out = output_targets(
            self.frozen, data, self.orig.logits_f, classwise, cfg.classwise_target, cfg.calibration_pool
        )
        features = cfg.classwise_target != "masked_output"
        self.shift_to = (
            centroid_shift_targets(self.orig, data, classwise, cfg.shift_keep)
            if cfg.classwise_target == "centroid_shift"
            else None
        )
        self.kl_rows = ~classwise if features else torch.ones_like(classwise)
        self.shift_rows = classwise.clone() if features else torch.zeros_like(classwise)
        self.hooks = Taps(self.inner, self.taps)
        # the early stop: class-wise requests only (a sample-wise target is not 'unrecognised')
        self.stops = cfg.unseen_stop and len(classwise) > 0 and bool(classwise.all())
        self.reference = unseen_reference(data, classwise) if self.stops else None
        if self.reference is not None:  # held out of the forget loss
            self.kl_rows &= ~self.reference
            self.shift_rows &= ~self.reference
        self.info.update(
            target_modules=self.targets,
            taps=self.taps,
            forget_classwise=int(classwise.sum()),
            forget_samplewise=int((~classwise).sum()),
            retain_budget=len(self.orig.h_r),
            cached_prefix_stages=self.orig.cut,
            unseen_reference=int(self.reference.sum()) if self.reference is not None else 0,
        )
        self.retain_weights = anchor_weights(self.orig.y_r, data.y_forget, data.num_classes, cfg.class_anchor)
        params = [p for p in work.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)

    def finished(self, epoch: int) -> bool:
        if not self.stops or not looks_unseen(self, self.reference):
            return False
        self.info["stopped_after_epochs"] = epoch
        return True

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A shuffled pass over the retain budget (drawn with ``class_anchor``'s weights where
        they are not uniform); each retain batch with the next forget batch (the forget set is
        cycled; its indices stay on the CPU)."""
        budget, n_f = len(self.orig.h_r), len(self.orig.h_f)
        # a forget set smaller than a forget batch is visited once per step, not repeated to fill it
        bs, fbs = self.cfg.batch_size, min(self.cfg.forget_batch_size, n_f)
        w = self.retain_weights
        if w is None:
            perm = torch.randperm(budget, generator=self.gen)
        else:
            perm = torch.multinomial(w, budget, replacement=True, generator=self.gen)
        perm = perm.to(self.device)
        fperm = torch.randperm(n_f, generator=self.gen)
        for s, ri in enumerate(even_batches(perm, bs)):
            yield ri, fperm[(torch.arange(fbs) + s * fbs) % n_f]

    def adapter(self, work: nn.Module) -> nn.Module:
        return work

    def finish(self, work: nn.Module) -> nn.Module:
        """The adapters merged into a copy of the weights (no inference overhead)."""
        from peft import PeftModel

        self.hooks.remove()
        peft_model = copy.deepcopy(work)
        assert isinstance(peft_model, PeftModel)
        merged: nn.Module = peft_model.merge_and_unload()
        return merged


# --- the loss terms (features: lists over taps of [batch, dim] tensors) ---------------------


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


# --- the unseen reference (class-wise early stop) ---------------------------------------------


def unseen_reference(data: UnlearnData, classwise: torch.Tensor) -> torch.Tensor | None:
    """The forget samples held out as the unseen reference: those the original never saw, when
    every forget sample is forgotten class-wise and there are enough of them; else None."""
    if data.forget_unseen is None or not bool(classwise.all()):
        return None
    ref = data.forget_unseen  # every row is class-wise here
    return ref if int(ref.sum()) >= MIN_UNSEEN_REFERENCE else None


def looks_unseen(method: RFAU, reference: torch.Tensor | None) -> bool:
    """True when the adapted model's outputs on the forget set pass ``forgotten_like``."""
    o, y = method.orig, method.data.y_forget
    with torch.no_grad(), autocast(method.device):
        logits = run_from(method.inner, o.h_f, o.cut).float().cpu()
    return forgotten_like(logits, y, reference)


def forgotten_like(logits: torch.Tensor, y: torch.Tensor, reference: torch.Tensor | None) -> bool:
    """The stop rule on outputs: no forget row predicted as its class (what retraining gives: a
    model that never saw the class never predicts it) and, with a reference, the median loss of
    the other rows at least the reference rows' median loss."""
    if bool((logits.argmax(1) == y).any()):
        return False
    if reference is None:
        return True
    loss = F.cross_entropy(logits, y, reduction="none")
    return bool(loss[~reference].median() >= loss[reference].median())


# --- the forget targets ---------------------------------------------------------------------


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
) -> torch.Tensor:
    """Target output distribution of the forget samples (``logits_f``: the original's outputs);
    rows of samples that get no output-level shift stay zero and are masked out of the loss."""
    n, c = len(data.y_forget), data.num_classes
    q = torch.zeros(n, c)
    sw = (~classwise).nonzero().squeeze(1)
    cw = classwise.nonzero().squeeze(1)
    if len(sw):
        logits_h = predict_logits(frozen, data.x_holdout)
        q[sw] = calibrated_targets(logits_f[sw], data.y_forget[sw], logits_h, data.y_holdout, pool)
    if len(cw) and classwise_target == "masked_output":
        forgotten = data.y_forget[data.forget_classwise].unique()  # whole classes the request names
        if len(forgotten) >= c:
            raise ModelError("class-wise forgetting of every class leaves nothing to predict")
        q[cw] = masked_targets(logits_f[cw], data.y_forget[cw], forgotten)
    return q.to(next(frozen.parameters()).device)


def regime_mask(forget_classwise: torch.Tensor, regime: str) -> torch.Tensor:
    """Which forget samples are forgotten class-wise: as the request says (auto), or all/none."""
    if regime == "class":
        return torch.ones_like(forget_classwise)
    if regime == "sample":
        return torch.zeros_like(forget_classwise)
    return forget_classwise.clone()


# --- modules, taps and the cached original features ------------------------------------------


def lora_config(cfg: RFAUConfig, targets: list[str]) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # peft computes alpha / r in float
        lora_dropout=0.0,
        bias="none",
        target_modules="^(" + "|".join(re.escape(t) for t in targets) + ")$",
    )


def resolve_modules(model: nn.Module, cfg: RFAUConfig) -> tuple[list[str], list[str]]:
    """Named LoRA targets and taps (defaults from the model's family), checked against the model.
    A target given by its last name part (``query``) names every module ending in it."""
    defaults = default_modules(model)
    targets = list(cfg.target_modules or (defaults.targets if defaults else []))
    taps = list(cfg.taps or (defaults.taps if defaults else []))
    modules = dict(model.named_modules())
    if not targets or not taps:
        raise ModelSettingsError(
            "RFAU needs target_modules and taps for this model (its family has no defaults)"
        )
    for name in targets:
        if name not in modules and not any(n.endswith("." + name) for n in modules):
            raise ModelSettingsError(f"unknown LoRA target module {name!r}; e.g. {_examples(model)}")
    targets = expand_module_names(model, targets)
    for name in targets:
        if not isinstance(modules[name], LORA_TYPES):
            raise ModelSettingsError(
                f"LoRA target {name!r} is a {type(modules[name]).__name__}; only Linear and Conv2d"
            )
    for name in taps:
        if name not in modules or name == "":
            raise ModelSettingsError(f"unknown tapped layer {name!r}; e.g. {_examples(model)}")
    if taps[-1] != _last_layer(model):
        taps.append(_last_layer(model))  # the output layer is always tapped (sample-wise target)
    return targets, taps


def _examples(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, LORA_TYPES)]
    return ", ".join(names[-6:])


def _last_layer(model: nn.Module) -> str:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


class Taps:
    """Forward hooks that record the outputs of named modules during a forward pass."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.out: dict[str, torch.Tensor] = {}
        mods = dict(model.named_modules())
        self.handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]
        self.names = names

    def _hook(self, name: str):
        def fn(_m, _inp, output):
            # transformers layers return tuples (hidden states first) or model outputs
            self.out[name] = output[0] if isinstance(output, tuple | list) else output

        return fn

    def features(self) -> list[torch.Tensor]:
        return [self.out[n].float().flatten(1) for n in self.names]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass
class OriginalFeatures:
    """What the frozen original gives once, before training."""

    cut: int  # stages before it hold no adapter or tap: their outputs are cached
    h_r: torch.Tensor  # stage-``cut`` inputs of the retain budget
    h_f: torch.Tensor  # ... and of the forget set
    feats_r: list[torch.Tensor]  # tapped features of the retain budget
    scales: list[torch.Tensor]  # E||h_l^0||^2 per tap
    logits_f: torch.Tensor  # outputs on the forget set (float32, CPU)
    feats_f: list[torch.Tensor]  # tapped features of the forget set
    y_r: torch.Tensor  # labels of the retain budget (CPU)


def cache_original(
    frozen: nn.Module,
    data: UnlearnData,
    modules: list[str],
    taps: list[str],
    cfg: RFAUConfig,
    gen: torch.Generator,
) -> OriginalFeatures:
    """Run the frozen stages once: a seeded retain budget and the forget set."""
    device = next(frozen.parameters()).device
    budget = min(cfg.retain_budget, len(data.y_retain))
    r_idx = torch.randperm(len(data.y_retain), generator=gen)[:budget]
    cut = frozen_prefix.prefix_cut(frozen, modules)  # rfau's Staged models, transformers encoders
    h_r = _prefix(frozen, data.x_retain[r_idx].to(device), cut, device)
    h_f = _prefix(frozen, data.x_forget.to(device), cut, device)
    feats_r = _features(frozen, taps, h_r, cut, device)
    feats_f = _features(frozen, taps, h_f, cut, device)
    logits_f = feats_f[-1].float().cpu()
    scales = [f.pow(2).mean().clamp_min(1e-8) for f in feats_r]
    return OriginalFeatures(cut, h_r, h_f, feats_r, scales, logits_f, feats_f, data.y_retain[r_idx])


def run_from(model: nn.Module, h: torch.Tensor, cut: int) -> torch.Tensor:
    """The model's output for stage-``cut`` inputs ``h`` (images when cut is 0)."""
    return frozen_prefix.run_from(model, h, cut)


@torch.no_grad()
def _prefix(model: nn.Module, x: torch.Tensor, cut: int, device) -> torch.Tensor:
    """Float inputs of stage ``cut`` for uint8 images (the images themselves when cut is 0)."""
    bs = inference_batch(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out = []
    for i in range(0, len(x), bs):
        with autocast(device):
            h = to_float(x[i : i + bs])
            h = run_to(model, h, cut)
            out.append(h.to(dtype) if h.is_floating_point() else h)  # token ids stay integers
    return torch.cat(out)


@torch.no_grad()
def _features(model: nn.Module, taps: list[str], h: torch.Tensor, cut: int, device) -> list[torch.Tensor]:
    """Outputs of the tapped layers for prefix outputs ``h`` (from ``_prefix``), batched."""
    bs = inference_batch(device)
    hooks = Taps(model, taps)
    chunks: list[list[torch.Tensor]] = [[] for _ in taps]
    for i in range(0, len(h), bs):
        with autocast(device):
            run_from(model, h[i : i + bs], cut)
        for c, f in zip(chunks, hooks.features()):
            c.append(f.to(torch.bfloat16 if device.type == "cuda" else torch.float32))
    hooks.remove()
    return [torch.cat(c) for c in chunks]


def run_to(model: nn.Module, x: torch.Tensor, cut: int) -> torch.Tensor:
    """The inputs of stage ``cut`` for float images ``x`` (token ids of a text model)."""
    return frozen_prefix.run_to(model, x, cut)
