"""NegGrad+ (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"; also a baseline of
"Deep Unlearn", Cadet et al. 2024): fine-tune all parameters on

    loss = alpha * CE(retain batch) - (1 - alpha) * CE(forget batch)

pairing every retain batch with the next batch of a cycled forget set, for a few epochs over the
retain set. Plain gradient ascent on the forget loss is unbounded (CE grows without limit once a
sample is misclassified), so each forget sample's CE is capped at ``forget_loss_cap`` (default
``2 * ln(num_classes)``, i.e. a true-class probability of about 1/C^2): a sample beyond the cap
contributes no gradient, so the ascent stops instead of exploding.

Defaults: 5 epochs, SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch size 128 for both sets
(SCRUB's NegGrad+ setting), alpha 0.99.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rfau.config import resolve_device
from rfau.methods._loops import (
    Cycler,
    SGDConfig,
    check_finite,
    finish,
    index_batches,
    inputs,
    sgd,
    working_copy,
)
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.progress import progress_bar
from rfau.train import autocast, set_seed


class NegGradPlusConfig(SGDConfig):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=1)  # retain batch
    forget_batch_size: int = Field(128, ge=1)
    lr: float = Field(0.01, gt=0)
    alpha: float = Field(0.99, gt=0, lt=1)  # weight of the retain loss; 1 - alpha on the forget loss
    forget_loss_cap: float | None = Field(None, gt=0)  # per-sample CE cap; None: 2 * ln(num_classes)


def unlearn_neggrad_plus(model: nn.Module, data: UnlearnData, cfg: NegGradPlusConfig) -> UnlearnResult:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    work = working_copy(model, device)
    x_r, y_r = data.x_retain.to(device), data.y_retain.to(device)
    x_f, y_f = data.x_forget.to(device), data.y_forget.to(device)
    forget = Cycler(len(y_f), cfg.forget_batch_size, gen, device)
    cap = cfg.forget_loss_cap or 2.0 * math.log(data.num_classes)
    opt = sgd(work.parameters(), cfg)
    history = []
    work.train()
    with progress_bar(cfg.epochs, "neggrad_plus") as advance:
        for epoch in range(cfg.epochs):
            batches = index_batches(len(y_r), cfg.batch_size, gen, device)
            sums = torch.zeros(2, device=device)
            for ri in batches:
                fi = forget.next()
                with autocast(device):  # separate passes: BatchNorm sees each set on its own
                    out_r = work(inputs(x_r, ri, cfg, gen)).float()
                    out_f = work(inputs(x_f, fi, cfg, gen)).float()
                loss_r = F.cross_entropy(out_r, y_r[ri])
                ce_f = F.cross_entropy(out_f, y_f[fi], reduction="none")
                loss_f = ce_f.clamp(max=cap).mean()  # bounded ascent: no gradient past the cap
                loss = cfg.alpha * loss_r - (1.0 - cfg.alpha) * loss_f
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += torch.stack([loss_r.detach(), ce_f.detach().mean()])
            lr_, lf_ = (sums / max(len(batches), 1)).tolist()
            check_finite("neggrad_plus", epoch, retain_loss=lr_, forget_loss=lf_)
            history.append({"epoch": epoch, "retain_loss": lr_, "forget_loss": lf_})
            advance(retain=lr_, forget=lf_)
    return finish(work, start, info={"history": history, "forget_loss_cap": cap})
