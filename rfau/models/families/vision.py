"""Families ``torchvision`` and ``timm``: image classifiers built by name, with weights from a
safetensors file. Neither library is part of rfau's install: each is imported when a model of
its family is built, and must match the installed torch (install it yourself).

Written against the documented APIs (``torchvision.models.get_model(name, weights=None,
num_classes=...)``, ``timm.create_model(name, pretrained=False, num_classes=...)``); their tests
skip where the library cannot be imported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from rfau.data.base import Dataset
from rfau.errors import ModelError
from rfau.models.families.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Family,
    ImageClassifier,
    Imported,
    ModelCard,
    ModuleDefaults,
    check_labels,
    inner_net,
    last_block_defaults,
    refuse_pickles,
)
from rfau.models.families.hf import NOT_FROM_BACKBONE

STATE_DICT_CONVERT = (
    "in a Python session you trust, load it and run "
    "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
)


class _NamedVisionFamily(Family):
    unsupported = {"retrain": NOT_FROM_BACKBONE}
    library: str

    def create(self, architecture: str, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def _library(self) -> Any:
        import importlib

        try:
            return importlib.import_module(self.library)
        except Exception as e:  # ImportError, or a library built for another torch (RuntimeError)
            raise ModelError(
                f"the {self.name} family needs {self.library}, which cannot be imported here ({e}); "
                f"install the {self.library} release that matches your torch"
            ) from None

    def build(self, card: ModelCard) -> nn.Module:
        return ImageClassifier(
            self.name, self.create(card.architecture, len(card.classes)), card.preprocessing
        )

    def load_weights(self, model: nn.Module, path: Path) -> None:
        try:
            inner_net(model).load_state_dict(load_file(str(path)), strict=True)
        except (SafetensorError, RuntimeError) as e:
            raise ModelError(f"{path}: cannot load into {self.name} model: {str(e)[:300]}") from None

    def save_weights(self, model: nn.Module, path: Path) -> None:
        state = inner_net(model).state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))

    def default_modules(self, model: nn.Module) -> ModuleDefaults | None:
        return last_block_defaults("net", inner_net(model))

    def import_model(self, source: Path, ds: Dataset, options: dict[str, Any]) -> Imported:
        """``source``: a .safetensors state dict (or a folder holding model.safetensors); options:
        ``arch`` (the model's name, required), ``labels`` (else the file's metadata "classes"),
        ``image_mean``/``image_std`` (ImageNet's by default), ``image_size`` (the dataset's)."""
        refuse_pickles(source, STATE_DICT_CONVERT)
        weights = source / "model.safetensors" if source.is_dir() else source
        if weights.suffix != ".safetensors" or not weights.is_file():
            raise ModelError(f"{source}: give a .safetensors file of the model's state dict")
        arch = options.get("arch")
        if not arch:
            raise ModelError(f"the {self.name} family needs the model's name (--arch, e.g. resnet50)")
        check_labels(options.get("labels") or labels_from_metadata(weights), ds, str(weights))
        prep = {
            "image_mean": list(options.get("image_mean") or IMAGENET_MEAN),
            "image_std": list(options.get("image_std") or IMAGENET_STD),
            "image_size": list(options.get("image_size") or ds.input_shape[1:]),
            "num_channels": 3,
        }
        model = ImageClassifier(self.name, self.create(arch, len(ds.classes)), prep)
        self.load_weights(model, weights)
        return Imported(model, arch, list(ds.classes), list(ds.input_shape), {}, prep)


def labels_from_metadata(weights: Path) -> list[str]:
    """The class names a safetensors file names in its metadata ("classes": a JSON list)."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            raw = (f.metadata() or {}).get("classes")
    except SafetensorError as e:
        raise ModelError(f"{weights}: not a safetensors file: {e}") from None
    if not raw:
        raise ModelError(
            f"{weights}: which class is each output? give --labels or a 'classes' metadata entry"
        )
    try:
        return [str(c) for c in json.loads(raw)]
    except (json.JSONDecodeError, TypeError):
        raise ModelError(f"{weights}: metadata 'classes' is not a JSON list") from None


class TorchvisionFamily(_NamedVisionFamily):
    name = "torchvision"
    summary = "torchvision classification models by name, weights from a safetensors file"
    library = "torchvision"

    def create(self, architecture: str, num_classes: int) -> nn.Module:
        tv = self._library()
        try:
            return tv.models.get_model(architecture, weights=None, num_classes=num_classes)
        except (ValueError, KeyError) as e:
            raise ModelError(f"torchvision has no model {architecture!r}: {e}") from None


class TimmFamily(_NamedVisionFamily):
    name = "timm"
    summary = "timm models by name, weights from a safetensors file"
    library = "timm"

    def create(self, architecture: str, num_classes: int) -> nn.Module:
        timm = self._library()
        try:
            return timm.create_model(architecture, pretrained=False, num_classes=num_classes)
        except RuntimeError as e:  # timm: "Unknown model (...)"
            raise ModelError(f"timm cannot create {architecture!r}: {e}") from None
