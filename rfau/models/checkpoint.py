"""Checkpoints: ``model.safetensors`` + ``model.json`` (the model card). No pickles, ever."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from rfau.data.base import Dataset, to_float
from rfau.io import sha256_file
from rfau.models.card import (
    CARD,
    SERVING_EXAMPLE,
    SERVING_EXAMPLE_ROWS,
    WEIGHTS,
    ModelCard,
    read_card,
    verify_weights,
)
from rfau.models.families import get_family

__all__ = [  # the card's names stay importable from here
    "CARD",
    "SERVING_EXAMPLE",
    "SERVING_EXAMPLE_ROWS",
    "WEIGHTS",
    "ModelCard",
    "build_from_card",
    "count_parameters",
    "load_checkpoint",
    "load_checkpoint_for",
    "read_card",
    "save_checkpoint",
    "save_serving_example",
    "verify_weights",
]


def save_checkpoint(model: nn.Module, card: ModelCard, out_dir: str | Path) -> ModelCard:
    """Write weights and card into ``out_dir`` (which must exist); returns the card with its hash."""
    out = Path(out_dir)
    get_family(card.family).save_weights(model, out / WEIGHTS)
    card = card.model_copy(update={"weights_sha256": sha256_file(out / WEIGHTS)})
    (out / CARD).write_text(card.model_dump_json(indent=2) + "\n")
    return card


def save_serving_example(ds: Dataset, out_dir: str | Path) -> None:
    """The dataset's first test inputs, as the served model takes them (images in [0, 1], token
    ids as they are), into ``out_dir``: the registered model's input example is real data."""
    ids = ds.split_ids("test")[:SERVING_EXAMPLE_ROWS]
    if len(ids) == SERVING_EXAMPLE_ROWS:
        np.save(Path(out_dir) / SERVING_EXAMPLE, to_float(ds.x[ds.indices(ids)]).numpy(), allow_pickle=False)


def build_from_card(card: ModelCard) -> nn.Module:
    """The (untrained) model a card describes, of any family: what a check of module names needs."""
    return get_family(card.family).build(card)


def load_checkpoint(model_dir: str | Path) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model the card describes (its family builds it) and load the safetensors
    weights strictly."""
    card = read_card(model_dir)
    verify_weights(model_dir)
    model = build_from_card(card)
    get_family(card.family).load_weights(model, Path(model_dir) / WEIGHTS)
    model.eval()
    return model, card


def load_checkpoint_for(model_dir: str | Path, ds: Dataset) -> tuple[nn.Module, ModelCard, Dataset]:
    """``load_checkpoint`` and the dataset as this model takes it (a text model's tokenised)."""
    model, card = load_checkpoint(model_dir)
    return model, card, get_family(card.family).prepare_dataset(ds, card)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "ModelCard",
    "save_checkpoint",
    "load_checkpoint",
    "load_checkpoint_for",
    "build_from_card",
    "read_card",
    "verify_weights",
    "count_parameters",
]
