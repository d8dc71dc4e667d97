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

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rfau.data.base import to_float
from rfau.errors import ModelError
from rfau.methods.base import MethodInfo
from rfau.methods.random_label import RandomLabel
from rfau.methods.sgd import SGDConfig


class SalUnConfig(SGDConfig):
    mask_ratio: float = Field(
        0.5, gt=0, le=1, description="share of weights (top |gradient|) that may change"
    )
    mask_batch_size: int = Field(256, ge=1, description="batch of the saliency pass over the forget set")
    epochs: int = Field(10, ge=1, description="passes over retain + forget")
    batch_size: int = Field(256, ge=1, description="images per step")
    lr: float = Field(0.013, gt=0, description="SGD learning rate (constant)")


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


class SalUnInfo(MethodInfo):
    salient_params: int | None = None  # weights the mask lets train


class SalUn(RandomLabel):
    """Random labels (``RandomLabel``'s examples and loss) on the salient weights only."""

    name = "salun"
    summary = "random labels on gradient-salient weights only (SalUn)"
    config = SalUnConfig
    cfg: SalUnConfig
    info_model = SalUnInfo
    info: SalUnInfo

    def setup(self, work: nn.Module) -> torch.optim.Optimizer:
        x_f, y_f = self.data.x_forget.to(self.device), self.data.y_forget.to(self.device)
        self.masks = saliency_mask(work, x_f, y_f, self.cfg.mask_ratio, self.cfg.mask_batch_size)
        self.params = dict(work.named_parameters())
        self.theta0 = {n: self.params[n].detach().clone() for n in self.masks}
        self.info.salient_params = int(sum(int(m.sum()) for m in self.masks.values()))
        return super().setup(work)

    @torch.no_grad()
    def before_step(self) -> None:
        for n, m in self.masks.items():
            grad = self.params[n].grad
            if grad is not None:
                grad.mul_(m)

    @torch.no_grad()
    def after_step(self, opt: torch.optim.Optimizer) -> None:
        """Put the other weights back (weight decay and momentum would move them) and clear
        their momentum."""
        for n, m in self.masks.items():
            p = self.params[n]
            p.copy_(torch.where(m, p, self.theta0[n]))
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.mul_(m)

    def trainable_params(self, work: nn.Module) -> int:
        return int(self.info.salient_params or 0)
