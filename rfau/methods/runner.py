"""The method runner: what every unlearning method shares, in one place.

``run(cls, model, data, cfg)`` (``rfau.methods.run_method`` by name) resolves the device, seeds
every random draw, makes the working copy (the caller's model is never changed), runs the
method, stops on an inf/NaN loss or weight, shows progress, times the run and builds the
``UnlearnResult``. A method supplies only what is its own, in the manner of SalUn's
``iterative_unlearn`` decorator (OPTML-Group/Unlearn-Saliency) and open-unlearning's trainers
that override only ``compute_loss``:

- a training method (``EpochMethod``) supplies its optimizer (``setup``), each epoch's batches
  (``batches``) and the loss of one batch (``loss``); the runner owns the epoch loop;
- any other method (``UnlearnMethod``) overrides ``unlearn(work)`` (SSD's one-shot dampening,
  retrain's training recipe, doing nothing).
"""

from __future__ import annotations

import copy
import importlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from rfau.config import resolve_device
from rfau.errors import ModelError, UsageError, validation_problems
from rfau.methods.base import MethodInfo, UnlearnData, UnlearnResult
from rfau.models.checkpoint import count_parameters
from rfau.progress import progress_bar
from rfau.train import set_seed


@dataclass(frozen=True)
class RunOptions:
    """How to run a method, apart from its settings."""

    desc: str | None = None  # progress label; default: the method's name
    on_epoch: Callable[[dict[str, float]], None] | None = None  # gets each epoch's history row


@dataclass
class Step:
    """The loss of one batch: ``objective`` is minimised; the ``logged`` scalars are averaged
    over the epoch's batches into the history (a term a batch does not report is not counted)."""

    objective: torch.Tensor
    logged: dict[str, torch.Tensor]


class UnlearnMethod:
    """One run of one unlearning method (a new instance per run, so it may keep state)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    config: ClassVar[type[BaseModel] | None] = None
    info_model: ClassVar[type[MethodInfo]] = MethodInfo  # the facts it reports (a subclass: its own)
    # libraries loaded before the clock starts: loading one (peft: seconds) is no unlearning cost
    libraries: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, cfg: Any, data: UnlearnData, device: torch.device, gen: torch.Generator, options: RunOptions
    ) -> None:
        self.cfg, self.data, self.device, self.gen, self.options = cfg, data, device, gen, options
        self.info = self.info_model()  # what it reports about its run, for unlearn.json

    @property
    def desc(self) -> str:
        return self.options.desc or self.name

    def working_copy(self, model: nn.Module) -> nn.Module:
        """The model this method changes: by default a trainable deep copy on the device."""
        return trainable_copy(model, self.device)

    def unlearn(self, work: nn.Module) -> None:
        """Change ``work`` in place."""
        raise NotImplementedError

    def trainable_params(self, work: nn.Module) -> int:
        """Parameters the method may change (counted before ``finish``)."""
        return count_parameters(work, trainable_only=True)

    def adapter(self, work: nn.Module) -> nn.Module | None:
        """The deletion delta as a module of its own (RFAU's peft model), if the method has one."""
        return None

    def finish(self, work: nn.Module) -> nn.Module:
        """The model to serve (RFAU merges its adapters here)."""
        return work


class EpochMethod(UnlearnMethod):
    """A method trained by the runner's epoch loop (``epoch_loop``)."""

    logged: ClassVar[tuple[str, ...]] = ("loss",)  # names of the terms in each epoch's history row
    train_mode: ClassVar[bool] = True  # module mode while training (RFAU: eval, frozen BatchNorm)

    @property
    def epochs(self) -> int:
        return int(self.cfg.epochs)

    def unlearn(self, work: nn.Module) -> None:
        self.info.history = epoch_loop(self, work)

    def setup(self, work: nn.Module) -> torch.optim.Optimizer:
        """Everything computed once before training; returns the optimizer."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Per-epoch changes before the first batch (e.g. a learning-rate step)."""

    def finished(self, epoch: int) -> bool:
        """True to stop before running epoch ``epoch`` (checked after ``start_epoch``)."""
        return False

    def batches(self, epoch: int) -> Iterator[Any]:
        """This epoch's batches, in order, each as ``loss`` takes it."""
        raise NotImplementedError

    def loss(self, batch: Any) -> Step:
        raise NotImplementedError

    def before_step(self) -> None:
        """Runs between backward and the optimizer step (e.g. gradient masking)."""

    def after_step(self, opt: torch.optim.Optimizer) -> None:
        """Runs after the optimizer step."""


def run(
    cls: type[UnlearnMethod],
    model: nn.Module,
    data: UnlearnData,
    cfg: BaseModel | dict[str, Any] | None = None,
    options: RunOptions | None = None,
) -> UnlearnResult:
    """Run one method on a working copy of ``model``; ``cfg``: its config, a dict of settings,
    or None for the defaults."""
    cfg = make_config(cls, cfg)
    load_libraries(cls)
    start = time.perf_counter()
    if len(data.y_forget) == 0:
        raise ModelError("nothing to forget: the forget set is empty")
    device = resolve_device(getattr(cfg, "device", "auto"))
    gen = set_seed(getattr(cfg, "seed", 0))
    method = cls(cfg, data, device, gen, options or RunOptions())
    work = method.working_copy(model)
    method.unlearn(work)
    trainable, adapter = method.trainable_params(work), method.adapter(work)
    served = method.finish(work)
    check_finite_weights(served, method.desc)
    if served is not model:  # `original` serves the caller's model itself: leave its mode alone
        served.eval()
    return UnlearnResult(
        model=served,
        trainable_params=trainable,
        total_params=count_parameters(served),
        seconds=time.perf_counter() - start,
        adapter=adapter,
        info=method.info,
    )


def load_libraries(cls: type[UnlearnMethod]) -> None:
    """Import what the method loads lazily (RFAU: peft), so that neither its clock nor a caller
    timing the whole stage (the bench's ``stage_seconds``) counts a one-time library load."""
    for library in cls.libraries:
        importlib.import_module(library)


def make_config(cls: type[UnlearnMethod], cfg: BaseModel | dict[str, Any] | None) -> Any:
    """The method's config object: validated from a dict, the defaults for None."""
    if cls.config is None or isinstance(cfg, BaseModel):
        return cfg
    try:
        return cls.config(**(cfg or {}))
    except ValidationError as e:
        raise UsageError(f"invalid settings for method {cls.name!r}: {validation_problems(e)}") from None


def epoch_loop(method: EpochMethod, work: nn.Module) -> list[dict[str, float]]:
    """``method.epochs`` epochs of: batches -> loss -> backward -> step; one history row per
    epoch with the mean of each logged term (one host sync per epoch)."""
    opt = method.setup(work)
    history = []
    with progress_bar(method.epochs, method.desc) as advance:
        for epoch in range(method.epochs):
            work.train(method.train_mode)
            method.start_epoch(epoch)
            if method.finished(epoch):
                break
            row = run_epoch(method, opt, epoch)
            check_finite(method.desc, epoch, **row)
            history.append({"epoch": epoch, **row})
            advance(**row)
            if method.options.on_epoch is not None:
                method.options.on_epoch(history[-1])
    return history


def run_epoch(method: EpochMethod, opt: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
    keys = method.logged
    sums = torch.zeros(len(keys), device=method.device)
    counts = torch.zeros(len(keys), dtype=torch.long)
    zero = torch.zeros((), device=method.device)
    for batch in method.batches(epoch):
        step = method.loss(batch)
        opt.zero_grad(set_to_none=True)
        step.objective.backward()
        method.before_step()
        opt.step()
        method.after_step(opt)
        sums += torch.stack([step.logged.get(k, zero).detach().float() for k in keys])
        counts += torch.tensor([k in step.logged for k in keys])
    means = sums / counts.clamp_min(1).to(method.device)
    return dict(zip(keys, means.tolist()))


def check_finite(desc: str, epoch: int, **values: float) -> None:
    """Stop a run whose loss went to inf/NaN instead of saving a broken model."""
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise ModelError(
            f"{desc} diverged in epoch {epoch + 1} ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
            "lower the learning rate"
        )


def check_finite_weights(model: nn.Module, desc: str) -> None:
    """Refuse a result with an inf/NaN weight (one host sync)."""
    params = list(model.parameters())
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise ModelError(f"{desc} produced inf/NaN weights; lower the learning rate")


def trainable_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy on ``device`` with every parameter trainable; the caller's model is untouched."""
    m = copy.deepcopy(model).to(device)
    for p in m.parameters():
        p.requires_grad_(True)
    return m


def frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy on ``device`` in eval mode with no trainable parameter (a teacher, a reference)."""
    m = copy.deepcopy(model).to(device).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m
