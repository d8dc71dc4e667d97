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
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rfau.methods.base import MethodInfo
from rfau.methods.runner import EpochMethod, Step
from rfau.methods.sgd import Cycler, SGDConfig, index_batches, inputs, sgd
from rfau.train import autocast


class NegGradPlusConfig(SGDConfig):
    epochs: int = Field(5, ge=1, description="passes over the retain set")
    batch_size: int = Field(128, ge=1, description="retain images per step")
    forget_batch_size: int = Field(128, ge=1, description="forget images per step (the forget set is cycled)")
    lr: float = Field(0.01, gt=0, description="SGD learning rate (constant)")
    alpha: float = Field(
        0.99, gt=0, lt=1, description="weight of the retain loss; 1 - alpha on the forget loss"
    )
    forget_loss_cap: float | None = Field(
        None, gt=0, description="per-sample forget CE cap (no gradient beyond it); None: 2 ln(num_classes)"
    )


class NegGradPlusInfo(MethodInfo):
    forget_loss_cap: float | None = None  # the cap applied (the setting's, or its default)


class NegGradPlus(EpochMethod):
    name = "neggrad_plus"
    summary = "descend on retain, bounded ascent on forget (NegGrad+)"
    config = NegGradPlusConfig
    cfg: NegGradPlusConfig
    info_model = NegGradPlusInfo
    info: NegGradPlusInfo
    logged = ("retain_loss", "forget_loss")

    def setup(self, work: nn.Module) -> torch.optim.Optimizer:
        data, device = self.data, self.device
        self.work = work
        self.x_r, self.y_r = data.x_retain.to(device), data.y_retain.to(device)
        self.x_f, self.y_f = data.x_forget.to(device), data.y_forget.to(device)
        self.forget = Cycler(len(self.y_f), self.cfg.forget_batch_size, self.gen, device)
        self.cap = self.cfg.forget_loss_cap or 2.0 * math.log(data.num_classes)
        self.info.forget_loss_cap = self.cap
        return sgd(work.parameters(), self.cfg)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every retain batch with the next batch of the cycled forget set."""
        for ri in index_batches(len(self.y_r), self.cfg.batch_size, self.gen, self.device):
            yield ri, self.forget.next()

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Step:
        ri, fi = batch
        with autocast(self.device):  # separate passes: BatchNorm sees each set on its own
            out_r = self.work(inputs(self.x_r, ri, self.cfg, self.gen)).float()
            out_f = self.work(inputs(self.x_f, fi, self.cfg, self.gen)).float()
        loss_r = F.cross_entropy(out_r, self.y_r[ri])
        ce_f = F.cross_entropy(out_f, self.y_f[fi], reduction="none")
        loss_f = ce_f.clamp(max=self.cap).mean()  # bounded ascent: no gradient past the cap
        objective = self.cfg.alpha * loss_r - (1.0 - self.cfg.alpha) * loss_f
        return Step(objective, {"retain_loss": loss_r, "forget_loss": ce_f.mean()})
