"""Residual Feature Alignment Unlearning (RFAU) with LoRA adapters (peft).

The original model f0 is frozen; LoRA adapters on named target modules add a residual to every
tapped feature, ``h_l(x) = h_l^0(x) + r_l(x)``. Training asks for:

- retain: a *zero residual*, ``sum_l ||h_l(x_r) - h_l^0(x_r)||^2 / E||h_l^0||^2`` on a cached
  budget of retain samples (original features computed once);
- forget, class-wise (the sample's whole class goes): a residual that moves each tapped
  feature to the original feature of a random retain sample of another class, so the class is
  no longer recognised;
- forget, sample-wise (scattered samples): a residual that makes the samples look *unseen*, not
  wrong. Per class, forget samples are ranked by the original model's margin and matched with
  the holdout sample (data the model never saw) at the same quantile of true-label confidence;
  the output-layer target takes that sample's confidence and off-class profile, and the loss is
  KL(target || model). The share pushed below the decision boundary then equals the error rate
  on unseen data, which is what retraining produces; a wrong-class shift would over-forget.
"""

from __future__ import annotations

import copy
import re
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

from rfau.config import RFAUConfig, resolve_device
from rfau.errors import ModelError
from rfau.methods.base import UnlearnData, UnlearnResult
from rfau.models.arch import ARCHITECTURES, Staged
from rfau.models.checkpoint import count_parameters
from rfau.progress import progress_bar
from rfau.train import autocast, predict_logits, set_seed, to_float

LORA_TYPES = (nn.Linear, nn.Conv2d)
MIN_HOLDOUT_PER_CLASS = 20  # below this a class's holdout is too thin; use the pooled holdout


def arch_name(model: nn.Module) -> str:
    for name, spec in ARCHITECTURES.items():
        if type(model) is spec.cls:
            return name
    return type(model).__name__


def resolve_modules(model: nn.Module, cfg: RFAUConfig) -> tuple[list[str], list[str]]:
    """Named LoRA targets and taps (defaults from the architecture), checked against the model."""
    spec = ARCHITECTURES.get(arch_name(model))
    targets = list(cfg.target_modules or (spec.lora_targets if spec else []))
    taps = list(cfg.taps or (spec.taps if spec else []))
    modules = dict(model.named_modules())
    if not targets or not taps:
        raise ModelError("RFAU needs target_modules and taps for this architecture")
    for name in targets:
        if name not in modules:
            raise ModelError(f"unknown LoRA target module {name!r}; e.g. {_examples(model)}")
        if not isinstance(modules[name], LORA_TYPES):
            raise ModelError(
                f"LoRA target {name!r} is a {type(modules[name]).__name__}; only Linear and Conv2d"
            )
    for name in taps:
        if name not in modules or name == "":
            raise ModelError(f"unknown tapped layer {name!r}; e.g. {_examples(model)}")
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
            self.out[name] = output

        return fn

    def features(self) -> list[torch.Tensor]:
        return [self.out[n].float().flatten(1) for n in self.names]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def calibrated_targets(
    logits_f: torch.Tensor, y_f: torch.Tensor, logits_h: torch.Tensor, y_h: torch.Tensor
) -> torch.Tensor:
    """Target output distributions that make forget samples look like unseen (holdout) data.

    Per class, the forget sample at rank u (by the original's margin) is matched with the holdout
    sample at the same quantile u (by true-label confidence). The target takes that holdout
    sample's whole output profile: its true-label confidence, and its off-class probabilities in
    descending order, placed on the forget sample's own off-classes in the original's order.
    Confidence, entropy and correctness (so the error rate) follow the unseen data.
    """
    n, c = logits_f.shape
    ar = torch.arange(n)
    p_h = logits_h.softmax(1)
    conf_h = p_h[torch.arange(len(y_h)), y_h]
    off = logits_f.clone()
    off[ar, y_f] = float("-inf")
    margin = logits_f[ar, y_f] - off.logsumexp(1)  # no saturation, unlike confidence
    matched = torch.empty(n, dtype=torch.long)
    for k in y_f.unique():
        idx = (y_f == k).nonzero().squeeze(1)
        ref = (y_h == k).nonzero().squeeze(1)
        if len(ref) < MIN_HOLDOUT_PER_CLASS:
            ref = torch.arange(len(y_h))
        if len(ref) == 0:
            raise ModelError("sample-wise forgetting needs holdout data (holdout_fraction > 0)")
        ref = ref[conf_h[ref].argsort()]
        u = (margin[idx].argsort().argsort().float() + 0.5) / len(idx)
        matched[idx] = ref[(u * len(ref)).long().clamp_max(len(ref) - 1)]
    p_m, y_m = p_h[matched], y_h[matched]
    p_off = p_m.clone()
    p_off[ar, y_m] = -1.0
    off_sorted = p_off.sort(1, descending=True).values[:, : c - 1]  # holdout profile, off-class
    order = off.argsort(1, descending=True)[:, : c - 1]  # forget sample's off-classes, best first
    q = torch.zeros(n, c)
    q[ar, y_f] = p_m[ar, y_m]
    q.scatter_(1, order, off_sorted)
    return q


def masked_targets(logits_f: torch.Tensor, y_f: torch.Tensor, forgotten: torch.Tensor) -> torch.Tensor:
    """Class-wise targets: the original's output with the sample's own class and every forgotten
    class removed and the rest renormalised: what a model that never saw those classes predicts."""
    z = logits_f.clone()
    z[:, forgotten] = float("-inf")
    z[torch.arange(len(y_f)), y_f] = float("-inf")
    return z.softmax(1)


def output_targets(
    frozen: nn.Module,
    data: UnlearnData,
    logits_f: torch.Tensor,
    classwise: torch.Tensor,
    classwise_target: str,
    device,
) -> torch.Tensor:
    """Target output distribution of the forget samples (``logits_f``: the original's outputs);
    rows of samples that get no output-level shift stay zero and are masked out of the loss."""
    n, c = len(data.y_forget), data.num_classes
    q = torch.zeros(n, c)
    sw = (~classwise).nonzero().squeeze(1)
    cw = classwise.nonzero().squeeze(1)
    if len(sw):
        logits_h = predict_logits(frozen, data.x_holdout, device=device)
        q[sw] = calibrated_targets(logits_f[sw], data.y_forget[sw], logits_h, data.y_holdout)
    if len(cw) and classwise_target == "masked_output":
        forgotten = data.y_forget[data.forget_classwise].unique()  # whole classes the request names
        if len(forgotten) >= c:
            raise ModelError("class-wise forgetting of every class leaves nothing to predict")
        q[cw] = masked_targets(logits_f[cw], data.y_forget[cw], forgotten)
    return q.to(device)


def unlearn_rfau(model: nn.Module, data: UnlearnData, cfg: RFAUConfig) -> UnlearnResult:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    targets, taps = resolve_modules(model, cfg)
    frozen = copy.deepcopy(model).to(device).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)

    classwise = data.forget_classwise.clone()
    if cfg.regime == "class":
        classwise[:] = True
    elif cfg.regime == "sample":
        classwise[:] = False

    # original features of a fixed retain budget, computed once
    budget = min(cfg.retain_budget, len(data.y_retain))
    r_idx = torch.randperm(len(data.y_retain), generator=gen)[:budget]
    # the stages before the first adapter or tap are frozen: run them once, train on the rest
    cut = frozen.first_stage(targets + taps) if isinstance(frozen, Staged) else 0
    h_r = _prefix(frozen, data.x_retain[r_idx].to(device), cut, device)
    h_f = _prefix(frozen, data.x_forget.to(device), cut, device)
    n_f = len(h_f)
    if n_f == 0:
        raise ModelError("nothing to forget: the forget set is empty")
    feats_r = _features(frozen, taps, h_r, cut, device)  # original tapped features, cached once
    logits_f = _features(frozen, taps[-1:], h_f, cut, device)[0].float().cpu()  # the output layer
    q_out = output_targets(frozen, data, logits_f, classwise, cfg.classwise_target, device)
    kl_mask = ~classwise if cfg.classwise_target == "other_class_features" else torch.ones_like(classwise)
    feat_cw = classwise if cfg.classwise_target == "other_class_features" else torch.zeros_like(classwise)

    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules="^(" + "|".join(re.escape(t) for t in targets) + ")$",
    )
    peft_model = get_peft_model(model.to(device), lora)
    peft_model.eval()  # frozen BatchNorm statistics: the residual comes from the adapters only
    inner = peft_model.base_model.model
    hooks = Taps(inner, taps)
    trainable = count_parameters(peft_model, trainable_only=True)
    total = count_parameters(frozen)
    opt = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0
    )
    steps = (budget + cfg.batch_size - 1) // cfg.batch_size
    scales = [f.pow(2).mean().clamp_min(1e-8) for f in feats_r]
    history = []
    with progress_bar(cfg.epochs, "rfau unlearn") as advance:
        for epoch in range(cfg.epochs):
            perm = torch.randperm(budget, generator=gen).to(device)
            fperm = torch.randperm(n_f, generator=gen)  # CPU: regime masks need no device sync
            sums = torch.zeros(2, device=device)
            for s in range(steps):
                ri = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                fi_cpu = fperm[(torch.arange(cfg.forget_batch_size) + s * cfg.forget_batch_size) % n_f]
                cw_cpu, kl_cpu = feat_cw[fi_cpu], kl_mask[fi_cpu]
                any_cw, any_kl = bool(cw_cpu.any()), bool(kl_cpu.any())
                fi, cw, klm = fi_cpu.to(device), cw_cpu.to(device), kl_cpu.to(device)
                hb = torch.cat([h_r[ri], h_f[fi]])
                with autocast(device):
                    inner.run(hb, cut) if cut else peft_model(hb)
                hs = hooks.features()
                nr = len(ri)
                loss_r = sum(F.mse_loss(h[:nr], f[ri].float()) / sc for h, f, sc in zip(hs, feats_r, scales))
                loss_f = torch.zeros((), device=device)
                if any_cw:  # class-wise, feature variant: features of random retain samples
                    pick = torch.randint(0, budget, (len(fi),), generator=gen).to(device)
                    per = [
                        ((h[nr:] - f[pick].float()).pow(2).mean(1) / sc)
                        for h, f, sc in zip(hs, feats_r, scales)
                    ]
                    loss_f = loss_f + (sum(per) * cw).sum() / len(fi)
                if any_kl:  # output targets: calibrated (sample-wise) or class-masked (class-wise)
                    q = q_out[fi]
                    kl = (q * (q.clamp_min(1e-12).log() - hs[-1][nr:].log_softmax(1))).sum(1)
                    loss_f = loss_f + (kl * klm).sum() / len(fi)
                loss = loss_r + cfg.forget_weight * loss_f
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += torch.stack([loss_r.detach(), loss_f.detach()])
            lr_, lf_ = (sums / steps).tolist()
            history.append({"epoch": epoch, "retain_loss": lr_, "forget_loss": lf_})
            advance(retain=lr_, forget=lf_)
    hooks.remove()
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    return UnlearnResult(
        model=merged,
        adapter=peft_model,
        trainable_params=trainable,
        total_params=total,
        seconds=time.perf_counter() - start,
        info={
            "target_modules": targets,
            "taps": taps,
            "forget_classwise": int(classwise.sum()),
            "forget_samplewise": int((~classwise).sum()),
            "retain_budget": budget,
            "cached_prefix_stages": cut,
            "history": history,
        },
    )


@torch.no_grad()
def _prefix(model: nn.Module, x: torch.Tensor, cut: int, device, bs: int = 512) -> torch.Tensor:
    """Float inputs of stage ``cut`` for uint8 images (the images themselves when cut is 0)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out = []
    for i in range(0, len(x), bs):
        with autocast(device):
            h = to_float(x[i : i + bs])
            out.append((model.run(h, 0, cut) if cut else h).to(dtype))
    return torch.cat(out)


@torch.no_grad()
def _features(
    model: nn.Module, taps: list[str], h: torch.Tensor, cut: int, device, bs: int = 512
) -> list[torch.Tensor]:
    """Outputs of the tapped layers for prefix outputs ``h`` (from ``_prefix``), batched."""
    hooks = Taps(model, taps)
    chunks: list[list[torch.Tensor]] = [[] for _ in taps]
    for i in range(0, len(h), bs):
        with autocast(device):
            model.run(h[i : i + bs], cut) if cut else model(h[i : i + bs])
        for c, f in zip(chunks, hooks.features()):
            c.append(f.to(torch.bfloat16 if device.type == "cuda" else torch.float32))
    hooks.remove()
    return [torch.cat(c) for c in chunks]
