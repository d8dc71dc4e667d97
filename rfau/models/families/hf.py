"""Families ``hf-image`` and ``hf-text``: Hugging Face transformers classifiers
(``AutoModelForImageClassification``, ``AutoModelForSequenceClassification``) from a local folder
made with ``save_pretrained``. Loaded with ``local_files_only=True`` and ``use_safetensors=True``:
nothing is downloaded and nothing is unpickled.

The card keeps the transformers config (``family_config``) and the preprocessing (the image
processor's normalisation, or the tokenizer itself as tokenizer.json text), so a model folder is
two files, weights and card, as every rfau model folder is. The weights file holds the
transformers model's own state dict (its key names), written with ``safetensors.torch.save_model``
(which also handles tied weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

from rfau.data.base import Dataset
from rfau.data.text import TextDataset, TokenizerSpec
from rfau.errors import ModelError
from rfau.models.families.base import (
    Family,
    ImageClassifier,
    Imported,
    ModelCard,
    ModuleDefaults,
    check_labels,
    expand_module_names,
    inner_net,
    output_layer_name,
    refuse_pickles,
)
from rfau.progress import quiet_transformers_bars

HF_CONVERT = (
    "in a Python session you trust, load it with transformers' from_pretrained and write it again "
    "with model.save_pretrained(DIR, safe_serialization=True) (processor/tokenizer beside it)"
)
NOT_FROM_BACKBONE = (
    "retrain rebuilds rfau's own architectures with rfau's training recipe; retraining a "
    "pre-trained model (the same fine-tune on the retained data from the same backbone) is not "
    "implemented yet"
)
MAX_TEXT_LENGTH = 512
# attention query/value projections by their names in common transformers models, for model
# types peft's target_module_mapping does not list (ViT, DistilBERT...)
ATTENTION_QUERY_VALUE = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"))


def _hf_weights_error(path: Path, e: Exception) -> ModelError:
    return ModelError(f"{path}: cannot load into the transformers model: {str(e)[:300]}")


class _HFFamily(Family):
    auto_class: str  # transformers' Auto class for this task
    unsupported = {"retrain": NOT_FROM_BACKBONE}

    def _auto(self) -> Any:
        import transformers

        return getattr(transformers, self.auto_class)

    def net_from_card(self, card: ModelCard) -> nn.Module:
        from transformers import AutoConfig

        cfg = dict(card.family_config)
        model_type = cfg.pop("model_type", None)
        if not model_type:
            raise ModelError(f"a {self.name} model card needs family_config with the transformers config")
        try:
            config = AutoConfig.for_model(model_type, **cfg)
        except (ValueError, KeyError) as e:
            raise ModelError(f"invalid transformers config in the model card: {e}") from None
        return self._auto().from_config(config)

    def load_weights(self, model: nn.Module, path: Path) -> None:
        from safetensors.torch import load_model

        try:
            load_model(inner_net(model), str(path), strict=True)
        except (SafetensorError, RuntimeError) as e:
            raise _hf_weights_error(path, e) from None

    def save_weights(self, model: nn.Module, path: Path) -> None:
        from safetensors.torch import save_model

        save_model(inner_net(model).cpu(), str(path))

    def load_pretrained(self, source: Path) -> Any:
        """The transformers model of a save_pretrained folder: local files, safetensors only."""
        refuse_pickles(source, HF_CONVERT)
        if not source.is_dir() or not (source / "config.json").is_file():
            raise ModelError(f"{source}: not a save_pretrained folder (config.json is missing)")
        if not any(source.glob("*.safetensors")):
            raise ModelError(f"{source}: no .safetensors weights; {HF_CONVERT}")
        try:
            with quiet_transformers_bars():
                net = self._auto().from_pretrained(str(source), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{source}: transformers cannot load it as {self.auto_class}: {e}") from None
        return net.eval()

    def default_modules(self, model: nn.Module) -> ModuleDefaults | None:
        """LoRA on peft's default targets for the model type (attention query/value for BERT),
        else on the attention query/value projections found by name (ViT); taps at the output
        of the last encoder layer and the output layer."""
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        found = [pair for pair in ATTENTION_QUERY_VALUE if set(pair) <= names]
        model_type = hf_config(model).model_type
        suffixes = PEFT_TARGETS.get(model_type) or (found[0] if found else None)
        if not suffixes:
            return None
        return ModuleDefaults(
            targets=tuple(expand_module_names(model, suffixes)),
            taps=(last_layer_of_stack(model), output_layer_name(model)),
        )


def last_layer_of_stack(model: nn.Module) -> str:
    """The name of the last layer of the model's longest ``nn.ModuleList`` (the encoder's layers)."""
    stacks = [(len(m), n) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not stacks:
        raise ModelError(f"{type(model).__name__}: no layer stack to tap; give taps=...")
    length, name = max(stacks, key=lambda s: s[0])
    return f"{name}.{length - 1}"


def hf_config(model: nn.Module) -> Any:
    """The transformers config of a wrapped transformers model."""
    return getattr(inner_net(model), "config")  # noqa: B009  (a transformers attribute, untyped here)


def architecture_of(net: Any) -> str:
    return str((net.config.architectures or [type(net).__name__])[0])


def model_labels(net: Any) -> list[str]:
    id2label = net.config.id2label
    return [str(id2label[i]) for i in range(net.config.num_labels)]


def config_dict(net: Any) -> dict:
    return json.loads(net.config.to_json_string(use_diff=False))


class HFImageFamily(_HFFamily):
    name = "hf-image"
    summary = "transformers AutoModelForImageClassification from a save_pretrained folder"
    auto_class = "AutoModelForImageClassification"

    def build(self, card: ModelCard) -> nn.Module:
        return ImageClassifier(self.name, self.net_from_card(card), card.preprocessing)

    def import_model(self, source: Path, ds: Dataset, options: dict[str, Any]) -> Imported:
        net = self.load_pretrained(source)
        check_labels(model_labels(net), ds, str(source))
        prep = image_preprocessing(source, net)
        return Imported(
            model=ImageClassifier(self.name, net, prep),
            architecture=architecture_of(net),
            classes=list(ds.classes),
            input_shape=list(ds.input_shape),
            family_config=config_dict(net),
            preprocessing=prep,
        )


def image_preprocessing(source: Path, net: Any) -> dict:
    """Normalisation and input size from the folder's preprocessor_config.json (the image
    processor's), the size from the model config where it has one."""
    path = source / "preprocessor_config.json"
    if not path.is_file():
        raise ModelError(
            f"{source}: preprocessor_config.json is missing; save the image processor beside the model "
            "(processor.save_pretrained(DIR)) so that rfau normalises images as the model expects"
        )
    try:
        proc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not JSON: {e}") from None
    channels = int(getattr(net.config, "num_channels", 3))
    normalize = proc.get("do_normalize", True)
    size = getattr(net.config, "image_size", None) or proc.get("size", {})
    if isinstance(size, dict):
        size = [size.get("height", size.get("shortest_edge")), size.get("width", size.get("shortest_edge"))]
    size = [size, size] if isinstance(size, int) else list(size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ModelError(
            f"{source}: cannot tell the model's input size (config image_size or processor size)"
        )
    mean = proc.get("image_mean", [0.5] * channels) if normalize else [0.0] * channels
    std = proc.get("image_std", [0.5] * channels) if normalize else [1.0] * channels
    return {"image_mean": list(mean), "image_std": list(std), "image_size": size, "num_channels": channels}


class TextClassifier(nn.Module):
    """A transformers sequence classifier behind rfau's interface: token ids and attention mask
    stacked as [N, 2, L] (a tokenised ``TextDataset``'s x) -> logits. ``backbone``: the card's
    record of the pre-trained start of a model rfau fine-tuned (rfau.models.families.backbone),
    which retrain starts from again; None for an imported model."""

    def __init__(self, net: nn.Module, backbone: dict | None = None) -> None:
        super().__init__()
        self.family = "hf-text"
        self.net = net
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != 2 or x.is_floating_point():
            raise ModelError(
                f"a hf-text model takes token ids [N, 2, L] of a tokenised text dataset; got a {x.dtype} "
                f"{list(x.shape)}"
            )
        return self.net(input_ids=x[:, 0], attention_mask=x[:, 1]).logits


class HFTextFamily(_HFFamily):
    name = "hf-text"
    summary = "transformers AutoModelForSequenceClassification from a save_pretrained folder"
    auto_class = "AutoModelForSequenceClassification"
    data_kinds = ("text",)
    # retrain runs where the card records the backbone the model was fine-tuned from (and says
    # why not elsewhere: rfau.models.families.backbone.retrain_start)
    unsupported: ClassVar[dict[str, str]] = {}

    def build(self, card: ModelCard) -> nn.Module:
        return TextClassifier(self.net_from_card(card), backbone=getattr(card, "backbone", None))

    def import_model(self, source: Path, ds: Dataset, options: dict[str, Any]) -> Imported:
        if not isinstance(ds, TextDataset):
            raise ModelError(f"a hf-text model needs a text dataset (CSV/JSONL/Parquet); {ds.name!r} is not")
        net = self.load_pretrained(source)
        check_labels(model_labels(net), ds, str(source))
        spec = TokenizerSpec.from_pretrained(source)
        limit = min(MAX_TEXT_LENGTH, int(getattr(net.config, "max_position_embeddings", MAX_TEXT_LENGTH)))
        max_length = int(options.get("max_length") or min(limit, spec.longest(ds.texts)))
        if not 1 <= max_length <= limit:
            raise ModelError(f"max_length must be in 1..{limit} for this model, got {max_length}")
        prep = {**spec.to_card(), "max_length": max_length}
        return Imported(
            model=TextClassifier(net),
            architecture=architecture_of(net),
            classes=list(ds.classes),
            input_shape=[2, max_length],
            family_config=config_dict(net),
            preprocessing=prep,
        )

    def serving_contract(self, card: ModelCard) -> dict[str, Any]:
        vocab = int(card.family_config.get("vocab_size", 2))
        return {
            "dtype": "int64",
            "shape": ["batch", 2, card.input_shape[1]],
            "layout": "[:, 0] token ids from the card's tokenizer, [:, 1] attention mask (1 = token)",
            "range": [0, vocab - 1],
            "scaling": "none: token ids as the tokenizer gives them, padded to max_length",
        }

    def serving_example(self, card: ModelCard, n: int) -> np.ndarray:
        """int64 [n, 2, max_length]: token ids (random, within the vocabulary) and a full mask."""
        vocab = int(card.family_config.get("vocab_size", 2))
        ids = np.random.default_rng(0).integers(0, vocab, (n, 1, card.input_shape[1]))
        return np.concatenate([ids, np.ones_like(ids)], 1).astype(np.int64)

    def prepare_dataset(self, ds: Dataset, card: ModelCard) -> Dataset:
        if not isinstance(ds, TextDataset):
            raise ModelError(f"a hf-text model takes a text dataset (CSV/JSONL/Parquet); {ds.name!r} is not")
        return ds.tokenized(
            TokenizerSpec.from_card(card.preprocessing), int(card.preprocessing["max_length"])
        )
