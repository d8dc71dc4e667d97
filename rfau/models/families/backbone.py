"""Text classifiers fine-tuned from a pre-trained backbone, and retrain from that same backbone.

The original of the text demo is a pre-trained encoder (all-MiniLM-L6-v2 from the ``rfau[text]``
extra, or any ``save_pretrained`` folder of a transformers encoder with a fast tokenizer) under a
fresh classification head (``AutoModelForSequenceClassification``, ``local_files_only=True``,
``use_safetensors=True``; the head's initialisation is seeded), fine-tuned on the training split:
the last ``trainable_layers`` encoder layers, the pooler and the head train, everything before
them stays frozen. The frozen part runs once, in eval mode, and is cached
(rfau.models.families.prefix), so an epoch costs the trained layers only.

The model card records the start as ``backbone`` (its name, folder and the sha256 of its weights,
and ``trainable_layers``), beside the recipe in ``lineage.train_config``; the card keeps
``backbone`` through unlearning. ``retrain`` reads it (``retrain_start``): it starts again from the
same pre-trained backbone (a fresh head, seeded) and runs the same fine-tune on the retained data,
never from a random initialisation or the fine-tuned weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from rfau.config import TrainConfig, resolve_device
from rfau.data.split import HOLDOUT_FRACTION, HOLDOUT_SALT, make_split, training_record
from rfau.data.text import TextDataset, TokenizerSpec
from rfau.errors import ModelError
from rfau.io import atomic_dir, sha256_file
from rfau.metrics import evaluate_model
from rfau.models.checkpoint import ModelCard, save_checkpoint
from rfau.models.families.hf import MAX_TEXT_LENGTH, TextClassifier, config_dict, hf_config
from rfau.models.families.minilm import minilm_folder
from rfau.models.families.prefix import encoder_parts, prefix_cut, run_from, run_to
from rfau.progress import progress_bar
from rfau.train import autocast, one_cycle, set_seed

MINILM = "all-MiniLM-L6-v2"  # the backbone of the rfau[text] extra, found by name
WEIGHTS = "model.safetensors"
NO_BACKBONE = (
    "this hf-text model records no pre-trained backbone (it was imported, not fine-tuned by rfau), "
    "so retrain cannot start again from it; fine-tune it with rfau (rfau.models.families.backbone) "
    "to make retrain possible"
)


class BackboneRecipe(BaseModel):
    """What the original is fine-tuned from, beside its training recipe (a ``TrainConfig``)."""

    backbone: str = Field(MINILM, description=f"{MINILM} (the rfau[text] extra) or a save_pretrained folder")
    trainable_layers: int = Field(
        2, ge=0, description="last encoder layers fine-tuned with the pooler and head"
    )
    max_length: int = Field(64, ge=2, le=MAX_TEXT_LENGTH, description="tokens per text (longer ones cut)")


def backbone_folder(name: str) -> Path:
    """The folder of a backbone: MiniLM unpacked from the extra, else the given folder."""
    if name == MINILM:
        return minilm_folder()
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file() or not (folder / WEIGHTS).is_file():
        raise ModelError(f"backbone {name!r}: not a save_pretrained folder with config.json and {WEIGHTS}")
    return folder


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load report or progress bar while a head is added to a backbone (the missing head
    weights are the point)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        logging.enable_progress_bar()


def classifier_from_backbone(folder: Path, classes: list[str], seed: int) -> TextClassifier:
    """The backbone under a fresh classification head for ``classes`` (seeded initialisation)."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    with _quiet_transformers():
        try:
            net = AutoModelForSequenceClassification.from_pretrained(
                str(folder),
                num_labels=len(classes),
                id2label=dict(enumerate(classes)),
                label2id={c: i for i, c in enumerate(classes)},
                local_files_only=True,
                use_safetensors=True,
            )
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{folder}: cannot load as a sequence classifier: {e}") from None
    return TextClassifier(net).eval()


def backbone_record(name: str, folder: Path, trainable_layers: int) -> dict[str, Any]:
    """What the card records of the start, so that retrain finds and checks it again."""
    return {
        "name": name,
        "folder": str(folder.resolve()),
        "weights_sha256": sha256_file(folder / WEIGHTS),
        "trainable_layers": trainable_layers,
    }


def freeze_to_last_layers(model: nn.Module, trainable_layers: int) -> list[str]:
    """Only the last ``trainable_layers`` encoder layers and what follows them (pooler, head)
    train; returns the names of the modules that hold trainable parameters."""
    parts = encoder_parts(model)
    if parts is None:
        raise ModelError(f"{type(model).__name__}: no transformers encoder (embeddings + layers) found")
    n = len(parts.layer_list())
    if trainable_layers > n:
        raise ModelError(f"trainable_layers={trainable_layers}, but the encoder has {n} layers")
    frozen = [parts.embeddings] + [f"{parts.layers}.{i}" for i in range(n - trainable_layers)]
    trained = set()
    for name, p in model.named_parameters():
        keep = not any(name.startswith(f + ".") for f in frozen)
        p.requires_grad_(keep)
        if keep:
            trained.add(name.rsplit(".", 1)[0])
    return sorted(trained)


def finetune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    trainable_layers: int,
    desc: str = "fine-tune",
    prefix_batch: int = 256,
) -> nn.Module:
    """Fine-tune the last layers and the head on token ids ``x`` [N, 2, L] with the recipe of
    ``cfg`` (epochs, batch size, optimizer, one-cycle learning rate, weight decay, label
    smoothing, seed); the frozen prefix runs once. Returns the model in eval mode."""
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    names = freeze_to_last_layers(model, trainable_layers)
    model.to(device).eval()
    cut = prefix_cut(model, names)
    with torch.no_grad(), autocast(device):
        h = torch.cat(
            [run_to(model, x[i : i + prefix_batch].to(device), cut) for i in range(0, len(x), prefix_batch)]
        )
    y = y.to(device)
    steps = (len(y) + cfg.batch_size - 1) // cfg.batch_size
    opt, sched = one_cycle(model, cfg, steps)
    model.train()
    with progress_bar(cfg.epochs, desc) as advance:
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(y), generator=gen).to(device)
            total = torch.zeros((), device=device)
            for s in range(steps):
                idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                with autocast(device):
                    logits = run_from(model, h[idx], cut)
                loss = F.cross_entropy(logits.float(), y[idx], label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.detach()
            advance(loss=float(total) / steps)
    return model.eval()


def finetune_original(
    ds: TextDataset,
    out_dir: str | Path,
    cfg: TrainConfig,
    recipe: BackboneRecipe,
    holdout_fraction: float | None = None,
    holdout_salt: str | None = None,
) -> ModelCard:
    """The original of the text demo: the backbone fine-tuned on the training split minus the
    holdout slice (as ``train_stage`` trains rfau's own), written as an hf-text model folder whose
    card records the backbone."""
    folder = backbone_folder(recipe.backbone)
    model = classifier_from_backbone(folder, list(ds.classes), cfg.seed)
    net = model.net
    limit = min(MAX_TEXT_LENGTH, int(getattr(net.config, "max_position_embeddings", MAX_TEXT_LENGTH)))
    max_length = min(recipe.max_length, limit)
    spec = TokenizerSpec.from_pretrained(folder)
    tds = ds.tokenized(spec, max_length)
    split = make_split(
        tds,
        [],
        HOLDOUT_FRACTION if holdout_fraction is None else holdout_fraction,
        holdout_salt=holdout_salt or HOLDOUT_SALT,
    )
    idx = tds.indices(split.retain)
    with atomic_dir(out_dir, "train") as tmp:
        finetune(
            model, tds.x[idx], tds.y[idx], cfg, recipe.trainable_layers, desc=f"fine-tune {recipe.backbone}"
        )
        metrics = evaluate_model(model, tds, split, seed=cfg.seed)
        card = ModelCard(
            family="hf-text",
            source=str(folder.resolve()),
            architecture=type(net).__name__,
            family_config=config_dict(net),
            preprocessing={**spec.to_card(), "max_length": max_length},
            classes=list(ds.classes),
            input_shape=[2, max_length],
            dataset=ds.name,
            **training_record(split, cfg.model_dump(), metrics, "original"),
            backbone=backbone_record(recipe.backbone, folder, recipe.trainable_layers),
        )
        card = save_checkpoint(model, card, tmp)
    return card


def backbone_of(model: nn.Module) -> dict[str, Any] | None:
    """The backbone record of a model fine-tuned from one (None for any other model)."""
    record = getattr(model, "backbone", None)
    return record if isinstance(record, dict) else None


def retrain_start(model: nn.Module, seed: int) -> nn.Module | None:
    """Where retrain starts for ``model``: for a model fine-tuned from a backbone, that backbone
    under a fresh seeded head (its weights checked against the card's sha256); None for rfau's
    own models (retrain re-initialises those); an hf-text model without a backbone is refused."""
    record = backbone_of(model)
    if record is None:
        if getattr(model, "family", None) == "hf-text":
            raise ModelError(f"method 'retrain' cannot run on this model: {NO_BACKBONE}")
        return None
    folder = backbone_folder(record["name"]) if record["name"] == MINILM else Path(record["folder"])
    if not (folder / WEIGHTS).is_file() or sha256_file(folder / WEIGHTS) != record["weights_sha256"]:
        raise ModelError(
            f"backbone {record['name']!r} at {folder}: missing, or its weights differ from the ones the "
            "original was fine-tuned from (sha256 in the model card)"
        )
    labels = hf_config(model).id2label
    fresh = classifier_from_backbone(folder, [str(labels[i]) for i in range(len(labels))], seed)
    fresh.backbone = dict(record)
    return fresh


__all__ = [
    "MINILM",
    "BackboneRecipe",
    "backbone_folder",
    "backbone_of",
    "classifier_from_backbone",
    "finetune",
    "finetune_original",
    "freeze_to_last_layers",
    "retrain_start",
]
