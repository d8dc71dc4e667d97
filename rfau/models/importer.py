"""Bring an outside model in: load it through its family, check its labels against the dataset,
and write an rfau model folder (safetensors weights + model card) that every stage, the registry
and the ledger take as they take a model rfau trained."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from rfau.data.base import Dataset
from rfau.data.split import HOLDOUT_FRACTION, HOLDOUT_SALT
from rfau.errors import ModelError
from rfau.io import atomic_dir, sha256_file
from rfau.models.checkpoint import CARD, WEIGHTS, ModelCard, read_card, save_checkpoint, verify_weights
from rfau.models.families import get_family
from rfau.models.families.base import check_labels, refuse_pickles
from rfau.models.families.hf import HF_CONVERT
from rfau.storage import open_store


def source_digest(source: Path) -> dict[str, str]:
    """sha256 of each weights file the model came from (what was imported, for the lineage)."""
    files = sorted(source.glob("*.safetensors")) if source.is_dir() else [source]
    return {f.name: sha256_file(f) for f in files}


def import_model(
    source: str | Path,
    family: str,
    ds: Dataset,
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
    with atomic_dir(out_dir, "model import") as tmp:
        card = save_checkpoint(imported.model.eval(), card, tmp)
    return card


# --- a model folder named by a URI (the pipeline's base_model_uri) ------------------------------


def weights_identity(digests: dict[str, str]) -> str:
    """One sha256 for a model's weights files: the file's own hash, or for a model sharded into
    several files the hash of their sorted hashes (fits a registry tag)."""
    values = sorted(digests.values())
    if len(values) == 1:
        return values[0]
    return hashlib.sha256(",".join(values).encode()).hexdigest()


def fetch_model_folder(uri: str, dest: Path) -> Path:
    """The folder a base_model_uri names: a local folder as it is, an ``s3://bucket/prefix`` copied
    into ``dest`` (every object under the prefix)."""
    if uri.startswith("s3://"):
        store = open_store(uri)
        keys = store.list()
        if not keys:
            raise ModelError(f"base_model_uri {uri!r}: no objects under that prefix")
        for key in keys:
            target = dest.joinpath(*key.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(store.get_bytes(key))
        return dest
    if "://" in uri:
        raise ModelError(f"base_model_uri {uri!r}: give a local folder or s3://bucket/prefix")
    path = Path(uri).expanduser()
    if not path.is_dir():
        raise ModelError(f"base_model_uri {uri!r}: no such folder (a model folder or s3://bucket/prefix)")
    return path


def is_rfau_model_folder(folder: Path) -> bool:
    return (folder / CARD).is_file()


def model_identities(folder: Path) -> set[str]:
    """The sha256 a model folder is known by in a registry's lineage: an rfau model folder's
    weights (and, if imported, what it was imported from); a save_pretrained folder's weights."""
    if is_rfau_model_folder(folder):
        card = read_card(folder)
        ids = {verify_weights(folder)}
        if card.lineage.get("source_sha256"):
            ids.add(weights_identity(card.lineage["source_sha256"]))
        return ids
    return {weights_identity(source_digest(folder))} if any(folder.glob("*.safetensors")) else set()


def import_model_folder(
    folder: Path, ds: Dataset, out_dir: Path, holdout_fraction: float = HOLDOUT_FRACTION, uri: str = ""
) -> ModelCard:
    """A base_model_uri's folder -> an rfau model folder ``out_dir``, checked as `rfau model import`
    checks: an rfau model folder is copied once its weights match its card and its classes are the
    dataset's; a save_pretrained folder is imported as ``hf-text`` (text data) or ``hf-image``.
    ``uri``: where the folder came from, recorded as the card's source (an S3 copy's local
    folder is temporary)."""
    refuse_pickles(folder, HF_CONVERT)
    if is_rfau_model_folder(folder):
        card = read_card(folder)
        verify_weights(folder)
        check_labels(card.classes, ds, str(folder))
        with atomic_dir(out_dir, "model import") as tmp:
            for name in (WEIGHTS, CARD):
                shutil.copyfile(folder / name, tmp / name)
        return card
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder}: neither an rfau model folder ({CARD}) nor a save_pretrained folder (config.json); "
            "import a torchvision/timm model with `rfau model import` first and give that folder"
        )
    family = "hf-text" if ds.kind == "text" else "hf-image"
    card = import_model(folder, family, ds, out_dir, holdout_fraction)
    if uri:  # the card names the URI; its weights (and their hash) are unchanged
        card = card.model_copy(update={"source": uri, "lineage": {**card.lineage, "source": uri}})
        (Path(out_dir) / CARD).write_text(card.model_dump_json(indent=2) + "\n")
    return card


__all__ = [
    "fetch_model_folder",
    "import_model",
    "import_model_folder",
    "model_identities",
    "weights_identity",
]
