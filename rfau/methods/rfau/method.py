"""The RFAU method: LoRA adapters (peft) on a frozen copy, trained on the loss terms toward the
forget targets."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

from rfau.methods.base import MethodInfo
from rfau.methods.rfau.config import RFAUConfig, lora_config
from rfau.methods.rfau.features import OriginalFeatures, Taps, cache_original, resolve_modules, run_from
from rfau.methods.rfau.losses import anchor_weights, feature_shift_loss, output_kl_loss, zero_residual_loss
from rfau.methods.rfau.targets import (
    centroid_shift_targets,
    forgotten_like,
    output_targets,
    regime_mask,
    unseen_reference,
)
from rfau.methods.runner import EpochMethod, Step, frozen_copy
from rfau.train import autocast, even_batches


class RFAUInfo(MethodInfo):
    """Where the adapters sit and how the forget set was split between the two regimes."""

    target_modules: list[str] | None = None
    taps: list[str] | None = None
    forget_classwise: int | None = None
    forget_samplewise: int | None = None
    retain_budget: int | None = None
    cached_prefix_stages: int | None = None
    unseen_reference: int | None = None  # class-wise forget samples the original never saw, held out
    stopped_after_epochs: int | None = None  # epochs trained when the early stop (unseen_stop) ended it


class RFAU(EpochMethod):
    name = "rfau"
    libraries = ("peft",)
    summary = "LoRA residual feature alignment (this project)"
    config = RFAUConfig
    cfg: RFAUConfig
    info_model = RFAUInfo
    info: RFAUInfo
    logged = ("retain_loss", "forget_loss")
    train_mode = False  # frozen BatchNorm statistics: the residual comes from the adapters only

    # set by working_copy
    targets: list[str]  # modules that get LoRA adapters
    taps: list[str]  # modules whose outputs are aligned (the output layer last)
    frozen: nn.Module  # the original model, frozen: the zero residual's reference
    # set by setup (what loss, batches and finished read)
    inner: nn.Module  # the adapted model inside the peft wrapper
    orig: OriginalFeatures  # the frozen model's cached prefix outputs and tapped features
    q_out: torch.Tensor  # output-layer targets of the forget rows (KL rows)
    shift_to: list[torch.Tensor] | None  # per-sample feature targets (centroid_shift), else None
    kl_rows: torch.Tensor  # forget rows trained toward q_out
    shift_rows: torch.Tensor  # forget rows trained toward feature targets
    hooks: Taps
    stops: bool  # whether the class-wise early stop applies
    reference: torch.Tensor | None  # forget rows held out as the unseen reference
    retain_weights: torch.Tensor | None  # sampling weights of the retain budget (None: uniform)

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
        info = self.info
        info.target_modules, info.taps = self.targets, self.taps
        info.forget_classwise, info.forget_samplewise = int(classwise.sum()), int((~classwise).sum())
        info.retain_budget, info.cached_prefix_stages = len(self.orig.h_r), self.orig.cut
        info.unseen_reference = int(self.reference.sum()) if self.reference is not None else 0
        self.retain_weights = anchor_weights(self.orig.y_r, data.y_forget, data.num_classes, cfg.class_anchor)
        params = [p for p in work.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)

    def finished(self, epoch: int) -> bool:
        if not self.stops or not self.looks_unseen():
            return False
        self.info.stopped_after_epochs = epoch
        return True

    def looks_unseen(self) -> bool:
        """True when the adapted model's outputs on the forget set pass ``forgotten_like``."""
        o = self.orig
        with torch.no_grad(), autocast(self.device):
            logits = run_from(self.inner, o.h_f, o.cut).float().cpu()
        return forgotten_like(logits, self.data.y_forget, self.reference)

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
