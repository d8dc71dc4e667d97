"""SalUn, saliency unlearning (Fan et al. ICLR 2024, OPTML-Group/Unlearn-Saliency).

1. Weight saliency: accumulate the gradient of the forget-set cross-entropy over the forget set
   (model in eval mode, batch-mean losses summed over batches) and keep the ``mask_ratio`` share
   of all weights with the largest ``|gradient|``, ranked globally across layers (the paper's
   hard threshold; 0.5 is the released setting).
2. Random-label unlearning (as the ``random_label`` method: forget samples get random other
   labels, trained together with the retain set) that updates only the salient weights:
   gradients are masked before the SGD step and the other weights are restored to their original
   values after it (the official code's fix, so weight decay and momentum cannot move them).
   BatchNorm running statistics are buffers, not weights: they update in train mode, as upstream.

Defaults are the released CIFAR-10 ResNet-18 example: mask ratio 0.5, 10 epochs, SGD lr 0.013,
momentum 0.9, weight decay 5e-4, batch size 256.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rfau.config import resolve_device
from rfau.errors import ModelError
from rfau.methods._loops import SGDConfig, ce_epochs, finish, working_copy
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.methods.random_label import relabelled_union
from rfau.train import set_seed, to_float


class SalUnConfig(SGDConfig):
    mask_ratio: float = Field(0.5, gt=0, le=1)  # share of weights (top |grad|) that may change
    mask_batch_size: int = Field(256, ge=1)  # batch of the saliency pass over the forget set
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.013, gt=0)


def saliency_mask(
    model: nn.Module, x_f: torch.Tensor, y_f: torch.Tensor, ratio: float, batch_size: int
) -> dict[str, torch.Tensor]:
    """Boolean mask per parameter: the top ``ratio`` of |d CE(forget) / d theta| over all weights.
    Runs in eval mode in float32; the model's weights and mode are left as they were."""
    if len(y_f) == 0:
        raise ModelError("nothing to forget: the forget set is empty")
    was_training = model.training
    model.eval()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for _, p in named]
    for i in range(0, len(y_f), batch_size):
        loss = F.cross_entropy(model(to_float(x_f[i : i + batch_size])), y_f[i : i + batch_size])
        for g, gi in zip(grads, torch.autograd.grad(loss, [p for _, p in named])):
            g += gi
    model.train(was_training)
    flat = torch.cat([g.abs().flatten() for g in grads])
    keep = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    keep[flat.topk(int(round(ratio * len(flat))), sorted=False).indices] = True
    masks, offset = {}, 0
    for (name, p), g in zip(named, grads):
        masks[name] = keep[offset : offset + g.numel()].view_as(p)
        offset += g.numel()
    return masks


def unlearn_salun(model: nn.Module, data: UnlearnData, cfg: SalUnConfig) -> UnlearnResult:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    work = working_copy(model, device)
    masks = saliency_mask(
        work, data.x_forget.to(device), data.y_forget.to(device), cfg.mask_ratio, cfg.mask_batch_size
    )
    params = dict(work.named_parameters())
    theta0 = {n: params[n].detach().clone() for n in masks}

    @torch.no_grad()
    def mask_grads() -> None:
        for n, m in masks.items():
            if params[n].grad is not None:
                params[n].grad.mul_(m)

    @torch.no_grad()
    def restore_frozen(opt: torch.optim.Optimizer) -> None:
        for n, m in masks.items():
            p = params[n]
            p.copy_(torch.where(m, p, theta0[n]))
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.mul_(m)

    x, labels = relabelled_union(data, gen, device)
    history = ce_epochs(work, x, labels, cfg, gen, "salun", before_step=mask_grads, after_step=restore_frozen)
    salient = int(sum(int(m.sum()) for m in masks.values()))
    return finish(work, start, trainable=salient, info={"history": history, "salient_params": salient})
