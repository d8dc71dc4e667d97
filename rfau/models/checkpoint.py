"""Checkpoints: ``model.safetensors`` + ``model.json`` (the model card). No pickles, ever."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator
from torch import nn

import rfau
from rfau.data.base import Dataset, to_float
from rfau.errors import ModelError
from rfau.io import sha256_file
from rfau.models.families import DEFAULT_FAMILY, get_family

WEIGHTS = "model.safetensors"
CARD = "model.json"
# a few real inputs as the served model takes them: MLflow's input example (no pickle: np.save)
SERVING_EXAMPLE = "serving_example.npy"
SERVING_EXAMPLE_ROWS = 2  # torch.export keeps a batch dimension of 1 static; 2 makes it dynamic


class ModelCard(BaseModel):
    """What a checkpoint is, where it came from, and how it did."""

    model_config = ConfigDict(extra="allow")

    family: str = DEFAULT_FAMILY  # rfau.models.families; cards from before families are rfau's own
    source: str = ""  # where an imported model came from (empty: trained by rfau)
    architecture: str
    arch_kwargs: dict = Field(default_factory=dict)
    family_config: dict = Field(default_factory=dict)  # e.g. the transformers config
    preprocessing: dict = Field(default_factory=dict)  # normalisation / tokenizer, as the family needs
    classes: list[str]
    input_shape: list[PositiveInt] = Field(min_length=1)
    dataset: str
    train_manifest_sha256: str
    train_samples: int
    holdout_fraction: float
    holdout_salt: str
    metrics: dict = Field(default_factory=dict)
    lineage: dict = Field(default_factory=dict)  # parent weights, method, forget-set hash
    weights_sha256: str = ""
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    rfau_version: str = rfau.__version__

    @field_validator("arch_kwargs")
    @classmethod
    def _no_negative_sizes(cls, v: dict) -> dict:
        bad = [k for k, x in v.items() if isinstance(x, int) and not isinstance(x, bool) and x < 0]
        if bad:
            raise ValueError(f"negative size for {', '.join(bad)}")
        return v


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


def read_card(model_dir: str | Path) -> ModelCard:
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise ModelError(f"{model_dir} is not a model folder: {CARD} is missing")
    try:
        card = ModelCard.model_validate_json(path.read_text())
    except ValidationError as e:
        raise ModelError(
            f"{path}: invalid model card: {e.errors()[0]['msg']} at {e.errors()[0]['loc']}"
        ) from None
    # an empty hash would switch the tamper check off: a saved card always has one
    if len(card.weights_sha256) != 64:
        raise ModelError(f"{path}: invalid model card: weights_sha256 must be a 64-digit sha256")
    return card


def verify_weights(model_dir: str | Path) -> str:
    """The weights' sha256, checked against the model card; raises ModelError on a mismatch."""
    card = read_card(model_dir)
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{model_dir}: {WEIGHTS} is missing")
    digest = sha256_file(weights)
    if card.weights_sha256 and digest != card.weights_sha256:
        raise ModelError(f"{weights}: sha256 does not match the model card; the weights were altered")
    return digest


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
