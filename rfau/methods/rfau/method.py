"""The RFAU method: LoRA adapters (peft) on a frozen copy, trained on the loss terms toward the
forget targets."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch
from torch import nn

from rfau.methods.base import MethodInfo
from rfau.methods.rfau.config import RFAUConfig, lora_config
from rfau.methods.rfau.features import (
    OriginalFeatures,
    Taps,
    cache_original,
    prefix_inputs,
    resolve_modules,
    run_from,
)
from rfau.methods.rfau.losses import (
    anchor_weights,
    feature_shift_loss,
    loss_match_loss,
    nearest_retain,
    output_kl_loss,
    zero_residual_loss,
)
from rfau.methods.rfau.selection import Snapshots, histogram_weights, sample_losses, unseen_distance
from rfau.methods.rfau.targets import (
    centroid_shift_targets,
    forgotten_like,
    output_targets,
    regime_mask,
    split_reference,
    unseen_loss_targets,
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
    fit_half: torch.Tensor | None = None  # loss_match_split: the reference rows loss_match reads
    start_logits: torch.Tensor | None = None  # the forget set's outputs at the epoch's start
    retain_weights: torch.Tensor | None  # sampling weights of the retain budget (None: uniform)
    snapshots: Snapshots | None  # per-epoch selection (select_snapshot), else None
    h_h: torch.Tensor | None  # stage-cut inputs of the holdout (sample-wise selection's reference)
    classwise: torch.Tensor  # which forget rows are forgotten class-wise
    loss_target: torch.Tensor | None = None  # loss_match's per-row target losses (NaN: none)

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
        if self.loss_target is not None:
            y = self.data.y_forget[fi_cpu].to(device)
            forget = forget + self.cfg.loss_match * loss_match_loss(hs[-1][nr:], y, self.loss_target[fi])
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
            self.frozen,
            data,
            self.orig.logits_f,
            classwise,
            cfg.classwise_target,
            cfg.calibration_pool,
            cfg.sample_target,
            cfg.prior_tilt,
        )
        features = cfg.classwise_target not in ("masked_output", "class_prior")
        self.shift_to = (
            centroid_shift_targets(self.orig, data, classwise, cfg.shift_keep)
            if cfg.classwise_target == "centroid_shift"
            else None
        )
        self.kl_rows = ~classwise if features else torch.ones_like(classwise)
        self.shift_rows = classwise.clone() if features else torch.zeros_like(classwise)
        self.classwise = classwise
        self.hooks = Taps(self.inner, self.taps)
        # the early stop: class-wise requests only (a sample-wise target is not 'unrecognised')
        all_classwise = len(classwise) > 0 and bool(classwise.all())
        self.stops = cfg.unseen_stop and all_classwise and not cfg.select_snapshot
        self.reference = unseen_reference(data, classwise) if (self.stops or cfg.select_snapshot) else None
        if self.reference is not None and not cfg.reference_in_loss:  # held out of the forget loss
            self.kl_rows &= ~self.reference
            self.shift_rows &= ~self.reference
        if cfg.loss_match > 0 and cfg.loss_match_split and self.reference is not None:
            self.fit_half = split_reference(self.reference, data.y_forget, self.gen)
        self.snapshots = Snapshots(cfg.select_patience) if cfg.select_snapshot else None
        sample_rows = bool((~classwise).any())
        self.h_h = (
            prefix_inputs(self.frozen, data.x_holdout, self.orig.cut)
            if cfg.select_snapshot and sample_rows and len(data.y_holdout)
            else None
        )
        info = self.info
        info.target_modules, info.taps = self.targets, self.taps
        info.forget_classwise, info.forget_samplewise = int(classwise.sum()), int((~classwise).sum())
        info.retain_budget, info.cached_prefix_stages = len(self.orig.h_r), self.orig.cut
        info.unseen_reference = int(self.reference.sum()) if self.reference is not None else 0
        self.retain_weights = anchor_weights(self.orig.y_r, data.y_forget, data.num_classes, cfg.class_anchor)
        if cfg.release_neighbours > 0 and sample_rows:
            o = self.orig
            tap = o.feats_r[-2] if len(o.feats_r) > 1 else o.feats_r[-1]
            tap_f = (o.feats_f[-2] if len(o.feats_f) > 1 else o.feats_f[-1])[(~classwise).to(tap.device)]
            released = nearest_retain(tap, tap_f, cfg.release_neighbours)
            w = self.retain_weights if self.retain_weights is not None else torch.ones(len(o.y_r))
            self.retain_weights = w * (~released).float()
        params = [p for p in work.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)

    def start_epoch(self, epoch: int) -> None:
        # the forget set's outputs before this epoch, read by loss_match's targets and by the stop
        # (finished runs right after, on the same weights): one forward pass for both
        matching = self.cfg.loss_match > 0 and self.reference is not None
        self.start_logits = self.forget_logits(self.orig.h_f) if matching or self.stops else None
        if matching:
            assert self.start_logits is not None and self.reference is not None
            logits, y = self.start_logits, self.data.y_forget
            recognised = logits.argmax(1) == y
            loss = sample_losses(logits, y)
            targets = unseen_loss_targets(loss, y, self.reference, recognised, self.fit_half)
            self.loss_target = targets.to(self.device)

    def finished(self, epoch: int) -> bool:
        if self.snapshots is not None:
            return self.snapshots.offer(self.inner, epoch, self.unseen_distance())
        if not self.stops or not self.looks_unseen():
            return False
        self.info.stopped_after_epochs = epoch
        return True

    def unlearn(self, work: nn.Module) -> None:
        super().unlearn(work)
        snaps = self.snapshots
        if snaps is None:
            return
        history = self.info.history or []
        if len(history) == self.epochs:  # the last epoch's state has not been offered yet
            snaps.offer(self.inner, len(history), self.unseen_distance())
        else:
            self.info.stopped_after_epochs = len(history)
        snaps.restore(self.inner)
        # per epoch, the state after it: its statistic and whether it is the one returned
        for row, distance in zip(history, snaps.trace[1:]):
            row["unseen_distance"] = distance
            row["selected"] = float(row["epoch"] + 1 == snaps.best_epoch)

    def forget_logits(self, h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device):
            return run_from(self.inner, h, self.orig.cut).float().cpu()

    def looks_unseen(self) -> bool:
        """True when the adapted model's outputs on the forget set at this epoch's start pass
        ``forgotten_like``."""
        assert self.start_logits is not None  # start_epoch computes them whenever the stop applies
        cfg, ref = self.cfg, self.reference
        # loss_match_split: the stop reads the half of the reference the loss targets do not
        stop_ref = ref if ref is None or self.fit_half is None else ref & ~self.fit_half
        trained = None if ref is None else ~ref
        return forgotten_like(
            self.start_logits, self.data.y_forget, stop_ref, cfg.classwise_stop, cfg.ks_alpha, trained
        )

    def unseen_distance(self) -> float:
        """The selection statistic of the current adapters (``selection.unseen_distance``)."""
        data, cw = self.data, self.classwise
        logits = self.forget_logits(self.orig.h_f)
        y = data.y_forget
        recognised = float((logits[cw].argmax(1) == y[cw]).float().mean()) if bool(cw.any()) else 0.0
        if self.h_h is not None:  # sample-wise rows against the holdout, with their class histogram
            lh = self.forget_logits(self.h_h)
            w = histogram_weights(data.y_holdout, y[~cw], data.num_classes)
            loss_f, loss_h = sample_losses(logits[~cw], y[~cw]), sample_losses(lh, data.y_holdout)
            return unseen_distance(loss_f, loss_h, w, recognised)
        if self.reference is not None:  # class-wise: trained images against the class's unseen ones
            loss = sample_losses(logits, y)
            return unseen_distance(loss[~self.reference], loss[self.reference], None, recognised)
        return recognised

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A shuffled pass over the retain budget (drawn with ``class_anchor``'s weights where
        they are not uniform), cycled to more steps where ``forget_passes`` asks for them; each
        retain batch with the next forget batch (the forget set is cycled; its indices stay on
        the CPU)."""
        budget, n_f = len(self.orig.h_r), len(self.orig.h_f)
        # a forget set smaller than a forget batch is visited once per step, not repeated to fill it
        bs, fbs = self.cfg.batch_size, min(self.cfg.forget_batch_size, n_f)
        retain_steps = math.ceil(budget / bs)
        steps = max(retain_steps, math.ceil(self.cfg.forget_passes * n_f / fbs))
        draws = budget if steps == retain_steps else steps * bs  # more steps: the budget cycled
        w = self.retain_weights
        if w is None:
            perm = torch.cat(
                [torch.randperm(budget, generator=self.gen) for _ in range(math.ceil(draws / budget))]
            )[:draws]
        else:
            perm = torch.multinomial(w, draws, replacement=True, generator=self.gen)
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
