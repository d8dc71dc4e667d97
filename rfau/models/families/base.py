"""What every model family provides: build a model from its card, load and save its weights in
safetensors, bring an outside model in, and name its default LoRA targets and feature taps.

A model of any family is served to the rest of rfau as one ``nn.Module`` whose ``forward`` takes
the dataset's own tensor (uint8 images as floats in [0, 1], or token ids of a text dataset) and
returns logits; its last ``nn.Linear`` is the output layer whose input is the penultimate
feature (what the metrics read)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rfau.data.base import Dataset
from rfau.data.text import TextDataset
from rfau.errors import ModelError
from rfau.models.arch import Normalize


class ModelCard(Protocol):
    """What a family reads of a model card (rfau.models.checkpoint.ModelCard, which imports the
    families: named here by its fields, not imported)."""

    family: str
    architecture: str
    arch_kwargs: dict
    family_config: dict
    preprocessing: dict
    classes: list[str]
    input_shape: list[int]


LORA_TYPES = (nn.Linear, nn.Conv2d)  # what peft's LoRA wraps and RFAU targets
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModuleDefaults:
    """A family's default RFAU modules (as peft keeps ``target_module_mapping`` per model type)."""

    targets: tuple[str, ...]  # LoRA target modules
    taps: tuple[str, ...]  # tapped layers whose outputs are aligned (the output layer always is)


@dataclass
class Imported:
    """An outside model brought in: the module and what its card records."""

    model: nn.Module
    architecture: str
    classes: list[str]
    input_shape: list[int]
    family_config: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)


class Family:
    """One family of models. Subclasses are stateless; one instance each lives in ``FAMILIES``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    data_kinds: ClassVar[tuple[str, ...]] = ("image",)  # "image" and/or "text"
    # methods that cannot run on this family, and why (checked before a run starts)
    unsupported: ClassVar[dict[str, str]] = {}

    def build(self, card: ModelCard) -> nn.Module:
        """The model the card describes, with freshly initialised weights."""
        raise NotImplementedError

    def load_weights(self, model: nn.Module, path: Path) -> None:
        raise NotImplementedError

    def save_weights(self, model: nn.Module, path: Path) -> None:
        raise NotImplementedError

    def import_model(self, source: Path, ds: Dataset, options: dict[str, Any]) -> Imported:
        raise ModelError(f"family {self.name!r} cannot import outside models")

    def owns(self, model: nn.Module) -> bool:
        return getattr(model, "family", None) == self.name

    def default_modules(self, model: nn.Module) -> ModuleDefaults | None:
        return None

    def serving_example(self, card: ModelCard, n: int) -> np.ndarray:
        """An input batch the served model takes (for MLflow's signature and torch.export, where
        the model folder carries no real one): float32 images in [0, 1] of the card's input shape."""
        return np.random.default_rng(0).random((n, *card.input_shape), dtype=np.float32)

    def serving_contract(self, card: ModelCard) -> dict[str, Any]:
        """What a caller of the served model must send: dtype, layout and the value range the
        served graph enforces (a request outside it is refused, not answered)."""
        return {
            "dtype": "float32",
            "shape": ["batch", *card.input_shape],
            "layout": "NCHW images",
            "range": [0.0, 1.0],
            "scaling": "pixel / 255 (no mean/std normalisation: the model does its own)",
        }

    def prepare_dataset(self, ds: Dataset, card: ModelCard) -> Dataset:
        """The dataset as this model takes it (a text model tokenises it here)."""
        if isinstance(ds, TextDataset) and "text" not in self.data_kinds:
            raise ModelError(f"a {self.name} model takes images; {ds.name!r} is a text dataset")
        return ds


# --- shared by the families of outside models ------------------------------------------------


def refuse_pickles(source: Path, how_to_convert: str) -> None:
    """Never unpickle: weights must come as safetensors. Names the pickle files found."""
    pickles = [source] if source.is_file() and source.suffix in PICKLE_SUFFIXES else []
    if source.is_dir():
        has_safetensors = any(source.glob("*.safetensors"))
        pickles = (
            [] if has_safetensors else sorted(p for p in source.iterdir() if p.suffix in PICKLE_SUFFIXES)
        )
    if pickles:
        names = ", ".join(p.name for p in pickles)
        raise ModelError(
            f"{source}: {names} is a pickle, which rfau never loads (unpickling runs code); "
            f"convert it to safetensors first: {how_to_convert}"
        )


def check_labels(model_classes: list[str], ds: Dataset, where: str) -> None:
    """The model's outputs must be the dataset's classes, in the dataset's order."""
    if list(model_classes) != list(ds.classes):
        raise ModelError(
            f"{where}: the model's labels {list(model_classes)} do not match the classes of dataset "
            f"{ds.name!r} {list(ds.classes)} (same names, in the same order: output i is class i); "
            "set the model's id2label (or --labels) to the dataset's class names"
        )


def inner_net(model: nn.Module) -> nn.Module:
    """The library's own model inside rfau's wrapper (``ImageClassifier``, ``TextClassifier``)."""
    return model.get_submodule("net")


def output_layer_name(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ModelError(f"{type(model).__name__} has no Linear output layer")
    return names[-1]


def expand_module_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Module names as given, or as suffixes (peft's way: ``query`` names every ``...query``)."""
    all_names = [n for n, _ in model.named_modules() if n]
    out: list[str] = []
    for name in names:
        found = [name] if name in all_names else [n for n in all_names if n.endswith("." + name)]
        if not found:
            raise ModelError(f"unknown module {name!r} in {type(model).__name__}")
        out += [n for n in found if n not in out]
    return out


class ImageClassifier(nn.Module):
    """An outside image classifier behind rfau's interface: float images in [0, 1] of the
    dataset's shape -> the model's input size and channels -> its normalisation -> logits."""

    def __init__(self, family: str, net: nn.Module, preprocessing: dict) -> None:
        super().__init__()
        self.family = family
        channels = int(preprocessing["num_channels"])
        mean, std = preprocessing["image_mean"], preprocessing["image_std"]
        if not len(mean) == len(std) == channels:
            raise ModelError(f"image_mean/image_std must have {channels} values, got {mean} and {std}")
        self.channels = channels
        self.size = tuple(preprocessing["image_size"])
        self.norm = Normalize(channels)  # rfau's own: mean/std are buffers in the state dict
        self.norm.mean.copy_(torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.norm.std.copy_(torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or not x.is_floating_point():
            raise ModelError(
                f"{self.family} model takes images [N, C, H, W]; got a {x.dtype} {list(x.shape)}"
            )
        if x.shape[1] != self.channels:  # grey -> RGB as image processors convert
            x = x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x[:, : self.channels]
        if tuple(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        out = self.net(self.norm(x))
        return out.logits if hasattr(out, "logits") else out


def last_block_defaults(net_prefix: str, net: nn.Module) -> ModuleDefaults:
    """CNN/ViT defaults: LoRA on the Linear/Conv2d layers of the last block of the last stage
    and on the head; taps at that stage's output and the head."""
    head = output_layer_name(net)
    stages = [
        (name, child)
        for name, child in net.named_children()
        if name != head.split(".")[0] and any(isinstance(m, LORA_TYPES) for m in child.modules())
    ]
    if not stages:
        raise ModelError(f"{type(net).__name__}: no block with Linear/Conv2d layers before the head")
    stage_name, stage = stages[-1]
    blocks = list(stage.named_children()) or [("", stage)]
    block_name, block = blocks[-1]
    prefix = f"{net_prefix}.{stage_name}" + (f".{block_name}" if block_name else "")
    targets = [
        f"{prefix}.{n}" if n else prefix for n, m in block.named_modules() if isinstance(m, LORA_TYPES)
    ]
    return ModuleDefaults(
        targets=(*targets, f"{net_prefix}.{head}"),
        taps=(f"{net_prefix}.{stage_name}", f"{net_prefix}.{head}"),
    )
