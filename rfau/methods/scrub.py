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

import copy
import time

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rfau.config import resolve_device
from rfau.errors import ModelError
from rfau.methods._loops import SGDConfig, check_finite, finish, index_batches, inputs, sgd, working_copy
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.progress import progress_bar
from rfau.train import autocast, set_seed


class ScrubConfig(SGDConfig):
    epochs: int = Field(3, ge=1)  # sgda_epochs
    msteps: int = Field(2, ge=0)  # epochs that start with a max-step on the forget set
    batch_size: int = Field(128, ge=1)  # retain (min-step) batch
    forget_batch_size: int = Field(512, ge=1)  # forget (max-step) batch
    lr: float = Field(5e-4, gt=0)
    gamma: float = Field(0.99, ge=0)  # weight of the retain cross-entropy
    alpha: float = Field(0.001, ge=0)  # weight of the retain KL to the teacher
    kd_temperature: float = Field(4.0, gt=0)
    lr_decay_epochs: list[int] = Field(default_factory=lambda: [3, 5, 9])
    lr_decay_rate: float = Field(0.1, gt=0, le=1)


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) of temperature-softened outputs, times T^2, mean over the batch."""
    log_s = F.log_softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * t * t


def unlearn_scrub(model: nn.Module, data: UnlearnData, cfg: ScrubConfig) -> UnlearnResult:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    if len(data.y_forget) == 0:
        raise ModelError("nothing to forget: the forget set is empty")
    teacher = copy.deepcopy(model).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = working_copy(model, device)
    x_r, y_r = data.x_retain.to(device), data.y_retain.to(device)
    x_f = data.x_forget.to(device)
    opt = sgd(student.parameters(), cfg)
    t = cfg.kd_temperature

    def step(xb: torch.Tensor, yb: torch.Tensor | None) -> torch.Tensor:
        with autocast(device):
            logit_s = student(xb).float()
            with torch.no_grad():
                logit_t = teacher(xb).float()
        kl = distill_kl(logit_s, logit_t, t)
        loss = -kl if yb is None else cfg.gamma * F.cross_entropy(logit_s, yb) + cfg.alpha * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return kl.detach()

    history = []
    with progress_bar(cfg.epochs, "scrub") as advance:
        for epoch in range(cfg.epochs):
            decays = sum(epoch + 1 > e for e in cfg.lr_decay_epochs)  # 1-based epochs, as upstream
            for group in opt.param_groups:
                group["lr"] = cfg.lr * cfg.lr_decay_rate**decays
            student.train()
            kl_f = torch.zeros((), device=device)
            if epoch < cfg.msteps:
                f_batches = index_batches(len(x_f), cfg.forget_batch_size, gen, device)
                for fi in f_batches:
                    kl_f += step(inputs(x_f, fi, cfg, gen), None)
                kl_f /= len(f_batches)
            r_batches = index_batches(len(y_r), cfg.batch_size, gen, device)
            kl_r = torch.zeros((), device=device)
            for ri in r_batches:
                kl_r += step(inputs(x_r, ri, cfg, gen), y_r[ri])
            kl_r /= max(len(r_batches), 1)
            row = {"epoch": epoch, "forget_kl": float(kl_f), "retain_kl": float(kl_r)}
            check_finite("scrub", epoch, forget_kl=row["forget_kl"], retain_kl=row["retain_kl"])
            history.append(row)
            advance(forget_kl=row["forget_kl"], retain_kl=row["retain_kl"])
    return finish(student, start, info={"history": history})
