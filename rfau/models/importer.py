"""Bring an outside model in: load it through its family, check its labels against the dataset,
and write an rfau model folder (safetensors weights + model card) that every stage, the registry
and the ledger take as they take a model rfau trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rfau.data.datasets import ImageDataset
from rfau.data.split import HOLDOUT_FRACTION, HOLDOUT_SALT
from rfau.errors import ModelError
from rfau.io import atomic_dir, sha256_file
from rfau.models.checkpoint import ModelCard, save_checkpoint
from rfau.models.families import get_family


def source_digest(source: Path) -> dict[str, str]:
    """sha256 of each weights file the model came from (what was imported, for the lineage)."""
    files = sorted(source.glob("*.safetensors")) if source.is_dir() else [source]
    return {f.name: sha256_file(f) for f in files}


def import_model(
    source: str | Path,
    family: str,
    ds: ImageDataset,
    out_dir: str | Path,
    holdout_fraction: float = HOLDOUT_FRACTION,
    options: dict[str, Any] | None = None,
) -> ModelCard:
    """``source`` (a save_pretrained folder, or a safetensors file for torchvision/timm) -> an rfau
    model folder ``out_dir`` whose card records family, source, the weights' sha256, classes and
    preprocessing. The model must not have trained on the split's holdout slice of ``ds``
    (``holdout_fraction``): that slice stands for data it never saw."""
    fam = get_family(family)
    src = Path(source).expanduser()
    if not src.exists():
        raise ModelError(f"model source {str(source)!r} not found")
    imported = fam.import_model(src, ds, options or {})
    card = ModelCard(
        family=family,
        source=str(src.resolve()),
        architecture=imported.architecture,
        family_config=imported.family_config,
        preprocessing=imported.preprocessing,
        classes=imported.classes,
        input_shape=imported.input_shape,
        dataset=ds.name,
        train_manifest_sha256="",  # trained outside rfau: its training data is not known here
        train_samples=0,
        holdout_fraction=holdout_fraction,
        holdout_salt=HOLDOUT_SALT,
        lineage={"kind": "imported", "source": str(src.resolve()), "source_sha256": source_digest(src)},
    )
    with atomic_dir(out_dir) as tmp:
        card = save_checkpoint(imported.model.eval(), card, tmp)
    return card


__all__ = ["import_model"]
