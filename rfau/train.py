"""Tensor-native training and inference: data stays one uint8 tensor on the device, batches are
index slices, augmentation (random crop + flip) runs batched on the device. The same code runs
on CPU and GPU; on CUDA it adds bf16 autocast and channels_last."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from rfau.config import TrainConfig, resolve_device
from rfau.data.base import to_float
from rfau.models.arch import Normalize
from rfau.progress import progress_bar


def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference_batch(device: torch.device) -> int:
    """Rows per batch of a no-grad pass: 128 on a CPU, whose caches then hold the activations
    (a 1024-row batch ran 1.7-2.3x slower on the bench's ResNets, 2 cores, and RFAU's 512-row
    prefix cache was most of its stage's memory), 1024 on a GPU."""
    return 1024 if device.type == "cuda" else 128


def augment(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, one draw per sample, batched."""
    if not pad and not flip:  # nothing to do; token ids [N, 2, L] of a text model pass as they are
        return x
    b, _, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    if flip:
        mask = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def fit_normalization(model: nn.Module, x_uint8: torch.Tensor) -> None:
    """Set the model's input normalisation from the training images (per channel)."""
    norm = model.get_submodule("norm")
    assert isinstance(norm, Normalize), "the model has no input normalisation"
    xf = to_float(x_uint8)
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    norm.mean.copy_(mean.view(-1, 1, 1))
    norm.std.copy_(std.view(-1, 1, 1))


def even_batches(perm: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
    """``perm`` cut into ceil(n / batch_size) batches whose sizes differ by at most one. A short
    last batch (2 of the 2,434 retained images of Fashion-MNIST's class scenario) gives BatchNorm a
    two-sample batch at full learning rate once an epoch: the loss jumps and the model underfits."""
    return perm.tensor_split(max(1, math.ceil(len(perm) / batch_size)))


def one_cycle(
    model: nn.Module, cfg: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """The recipe's optimizer (SGD with Nesterov momentum, or AdamW) over the trainable
    parameters, and its one-cycle schedule over ``cfg.epochs`` epochs."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
        )
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)


def train_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, desc: str = "train"
) -> nn.Module:
    """Train all parameters with a one-cycle schedule; returns the model in eval mode."""
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    fit_normalization(model, x)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x, y = x.to(device), y.to(device)
    n = len(y)
    steps = math.ceil(n / cfg.batch_size)  # the number of batches even_batches makes
    opt, sched = one_cycle(model, cfg, steps)
    model.train()
    with progress_bar(cfg.epochs, desc) as advance:
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            total = torch.zeros((), device=device)
            for idx in even_batches(perm, cfg.batch_size):
                xb = augment(to_float(x[idx]), cfg.augment_pad, cfg.augment_flip, gen)
                with autocast(device):
                    loss = F.cross_entropy(model(xb), y[idx], label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.detach()
            advance(loss=float(total) / steps)  # one host sync per epoch
    return model.eval()


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Logits (float32, on CPU) for uint8 images, in eval mode."""
    device = device or next(model.parameters()).device
    batch_size = batch_size or inference_batch(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(x), batch_size):
            with autocast(device):
                out.append(model(to_float(x[i : i + batch_size].to(device))).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
