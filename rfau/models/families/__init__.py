"""Model families behind one small interface (``Family``), in one table like the methods':
rfau's own architectures, Hugging Face image and text classifiers, torchvision and timm models.

``load_checkpoint``/``save_checkpoint`` (rfau.models.checkpoint) dispatch on the card's
``family``; RFAU asks ``default_modules`` for its LoRA targets and taps; a stage asks
``check_method`` whether a method can run on a model before it starts, and
``prepare_dataset`` for the dataset as the model takes it."""

from __future__ import annotations

from typing import Any

from torch import nn

from rfau.data.base import Dataset
from rfau.errors import ModelError
from rfau.models.card import DEFAULT_FAMILY
from rfau.models.families.base import Family, Imported, ModuleDefaults, expand_module_names
from rfau.models.families.hf import HFImageFamily, HFTextFamily
from rfau.models.families.native import NATIVE_DEFAULTS, NativeFamily
from rfau.models.families.vision import TimmFamily, TorchvisionFamily

FAMILIES: dict[str, Family] = {
    f.name: f for f in (NativeFamily(), HFImageFamily(), HFTextFamily(), TorchvisionFamily(), TimmFamily())
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ModelError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(model: nn.Module) -> Family | None:
    return next((f for f in FAMILIES.values() if f.owns(model)), None)


def default_modules(model: nn.Module) -> ModuleDefaults | None:
    """The default LoRA targets and taps of a model's family (None for a model of no family)."""
    family = family_of(model)
    return family.default_modules(model) if family else None


def check_method(family: str, method: str, cfg: Any, dataset: Dataset) -> None:
    """Refuse, with the reason, a method that cannot run on this family or this data."""
    why = get_family(family).unsupported.get(method)
    if why:
        raise ModelError(f"method {method!r} cannot run on a {family} model: {why}")
    augments = getattr(cfg, "augment_pad", 0) or getattr(cfg, "augment_flip", False)
    if dataset.kind == "text" and augments:
        raise ModelError(
            f"method {method!r} augments images (random crop and flip), which token ids cannot take; "
            "run it on text with --set augment_pad=0 --set augment_flip=false"
        )


__all__ = [
    "DEFAULT_FAMILY",
    "FAMILIES",
    "NATIVE_DEFAULTS",
    "Family",
    "Imported",
    "ModuleDefaults",
    "check_method",
    "default_modules",
    "expand_module_names",
    "family_of",
    "get_family",
]
