"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning", meghdadk/SCRUB).

The teacher is the frozen original model; the student starts as a copy of it. Each epoch:

- max-step (only in the first ``msteps`` epochs): one pass over the forget set minimising
  ``-KL(teacher || student)``, pushing the student away from the teacher on the forget set;
- min-step: one pass over the retain set minimising
  ``gamma * CE(student, y) + alpha * KL(teacher || student)``, staying close to the teacher.

The KL is the knowledge-distillation divergence at temperature ``kd_temperature``, scaled by T^2
(``DistillKL`` in the official code). The student trains in train mode, the teacher in eval mode.
The learning rate steps down by ``lr_decay_rate`` after every epoch listed in ``lr_decay_epochs``.

Defaults are the official CIFAR ResNet settings: 3 epochs with 2 max-steps, SGD lr 5e-4,
momentum 0.9, weight decay 5e-4, gamma 0.99, alpha 0.001, T 4, retain batch 128, forget batch
512, lr decay x0.1 after epochs 3, 5, 9.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from rfau.methods.runner import EpochMethod, Step, frozen_copy
from rfau.methods.sgd import SGDConfig, index_batches, inputs, sgd
from rfau.train import autocast


class ScrubConfig(SGDConfig):
    epochs: int = Field(3, ge=1, description="epochs (sgda_epochs): each has a min-step over the retain set")
    msteps: int = Field(2, ge=0, description="the first epochs that start with a max-step on the forget set")
    batch_size: int = Field(128, ge=1, description="retain (min-step) batch")
    forget_batch_size: int = Field(512, ge=1, description="forget (max-step) batch")
    lr: float = Field(5e-4, gt=0, description="SGD learning rate before decay")
    gamma: float = Field(0.99, ge=0, description="weight of the retain cross-entropy")
    alpha: float = Field(0.001, ge=0, description="weight of the retain KL to the teacher")
    kd_temperature: float = Field(4.0, gt=0, description="distillation temperature T")
    lr_decay_epochs: list[int] = Field(
        default_factory=lambda: [3, 5, 9], description="1-based epochs after which the lr decays"
    )
    lr_decay_rate: float = Field(0.1, gt=0, le=1, description="lr factor at each decay epoch")

    @model_validator(mode="after")
    def _warn_unused_max_steps(self) -> ScrubConfig:
        if self.msteps > self.epochs:
            warnings.warn(
                f"scrub: msteps={self.msteps} > epochs={self.epochs}; only {self.epochs} max-steps run",
                UserWarning,
                stacklevel=2,
            )
        return self


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) of temperature-softened outputs, times T^2, mean over the batch."""
    log_s = F.log_softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * t * t


class Scrub(EpochMethod):
    name = "scrub"
    summary = "teacher-student max/min distillation (SCRUB)"
    config = ScrubConfig
    cfg: ScrubConfig
    logged = ("forget_kl", "retain_kl")

    def working_copy(self, model: nn.Module) -> nn.Module:
        self.teacher = frozen_copy(model, self.device)  # the original; the student is the copy
        return super().working_copy(model)

    def setup(self, work: nn.Module) -> torch.optim.Optimizer:
        self.student = work
        self.x_r, self.y_r = self.data.x_retain.to(self.device), self.data.y_retain.to(self.device)
        self.x_f = self.data.x_forget.to(self.device)
        self.opt = sgd(work.parameters(), self.cfg)
        return self.opt

    def start_epoch(self, epoch: int) -> None:
        decays = sum(epoch + 1 > e for e in self.cfg.lr_decay_epochs)  # 1-based epochs, as upstream
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * self.cfg.lr_decay_rate**decays

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Max-step batches of the forget set (label None) in the first ``msteps`` epochs, then
        min-step batches of the retain set."""
        cfg, gen, device = self.cfg, self.gen, self.device
        if epoch < cfg.msteps:
            for fi in index_batches(len(self.x_f), cfg.forget_batch_size, gen, device):
                yield inputs(self.x_f, fi, cfg, gen), None
        for ri in index_batches(len(self.y_r), cfg.batch_size, gen, device):
            yield inputs(self.x_r, ri, cfg, gen), self.y_r[ri]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor | None]) -> Step:
        xb, yb = batch
        with autocast(self.device):
            logit_s = self.student(xb).float()
            with torch.no_grad():
                logit_t = self.teacher(xb).float()
        kl = distill_kl(logit_s, logit_t, self.cfg.kd_temperature)
        if yb is None:  # max-step: away from the teacher on the forget set
            return Step(-kl, {"forget_kl": kl})
        return Step(self.cfg.gamma * F.cross_entropy(logit_s, yb) + self.cfg.alpha * kl, {"retain_kl": kl})
