"""Modules, taps and the original (frozen) model's cached features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rfau.data.base import to_float
from rfau.errors import ModelSettingsError
from rfau.methods.base import UnlearnData
from rfau.methods.rfau.config import LORA_TYPES, RFAUConfig
from rfau.models.families import default_modules, expand_module_names
from rfau.models.families import prefix as frozen_prefix
from rfau.train import autocast, inference_batch


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


def prefix_inputs(frozen: nn.Module, x: torch.Tensor, cut: int) -> torch.Tensor:
    """Stage-``cut`` inputs of uint8 images ``x`` through the frozen stages (cached once)."""
    device = next(frozen.parameters()).device
    return _prefix(frozen, x.to(device), cut, device)


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
