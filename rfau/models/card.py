"""The model card (``model.json``) beside a checkpoint's ``model.safetensors``: reading it and
checking the weights against it needs neither torch nor a model family, so the registry and the
ledger use this module without loading the numeric side."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator

import rfau
from rfau.errors import ModelError
from rfau.io import sha256_file

DEFAULT_FAMILY = "rfau"  # what a card without ``family`` is (cards written before families existed)
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
