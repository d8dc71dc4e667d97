"""The pipeline's stages as plain functions over paths and configs. The CLI, dvc.yaml and the
KFP components are thin drivers of these; no stage logic lives anywhere else.

Every stage validates its inputs before it writes, and writes its output folder atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import ValidationError

from rfau.config import TrainConfig
from rfau.data.base import Dataset
from rfau.data.datasets import load_dataset
from rfau.data.requests import load_requests
from rfau.data.split import (
    HOLDOUT_FRACTION,
    HOLDOUT_SALT,
    Split,
    forget_regime,
    ids_hash,
    make_split,
    read_split,
    training_record,
    write_split,
)
from rfau.errors import ModelError, RfauError, UsageError, validation_problems
from rfau.io import atomic_dir, claim_output, claim_output_file
from rfau.methods import UnlearnData, get_method, run_method
from rfau.metrics import evaluate_model
from rfau.models.arch import build_model, default_architecture
from rfau.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint, save_serving_example
from rfau.models.families import check_method, get_family
from rfau.records import Evaluation, UnlearnInfo
from rfau.train import train_model

DatasetRef = str | Dataset


def _ds(dataset: DatasetRef) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else load_dataset(dataset)


def split_stage(
    dataset: DatasetRef,
    requests: Sequence[str | Path],
    out_dir: str | Path,
    holdout_fraction: float = HOLDOUT_FRACTION,
    holdout_salt: str = HOLDOUT_SALT,
) -> Split:
    """Deletion requests -> retain/forget/holdout/test manifests + split.json."""
    ds = _ds(dataset)
    split = make_split(ds, load_requests(list(requests)), holdout_fraction, holdout_salt=holdout_salt)
    write_split(split, out_dir)
    return split


def train_stage(
    dataset: DatasetRef,
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    split_dir: str | Path | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    holdout_salt: str = HOLDOUT_SALT,
) -> ModelCard:
    """Bootstrap: train the original model on the training split minus the holdout slice.
    With ``split_dir``: train on that split's retain set (this is "retrain")."""
    ds = _ds(dataset)
    cfg = cfg or TrainConfig.preset(ds.kind)
    if split_dir:
        split = read_split(split_dir)
    else:
        split = make_split(ds, [], holdout_fraction, holdout_salt=holdout_salt)
    arch = cfg.architecture or default_architecture(ds.kind)
    kwargs = {"width": cfg.width} if cfg.width else {}
    idx = ds.indices(split.retain)
    torch.manual_seed(cfg.seed)
    model = build_model(arch, ds.input_shape[0], len(ds.classes), **kwargs)  # seeded init
    with atomic_dir(out_dir, "train") as tmp:
        model = train_model(model, ds.x[idx], ds.y[idx], cfg, desc=f"train {arch}")
        metrics = evaluate_model(model, ds, split, seed=cfg.seed)
        card = ModelCard(
            architecture=arch,
            arch_kwargs=kwargs,
            classes=list(ds.classes),
            input_shape=list(ds.input_shape),
            dataset=ds.name,
            **training_record(split, cfg.model_dump(), metrics, "retrain" if split_dir else "original"),
        )
        card = save_checkpoint(model, card, tmp)
        save_serving_example(ds, tmp)
    return card


def unlearn_data(ds: Dataset, split: Split) -> UnlearnData:
    r, f, h = (ds.indices(getattr(split, m)) for m in ("retain", "forget", "holdout"))
    forgotten = {ds.classes.index(c) for c in split.forget_classes}
    return UnlearnData(
        x_retain=ds.x[r],
        y_retain=ds.y[r],
        x_forget=ds.x[f],
        y_forget=ds.y[f],
        forget_classwise=torch.tensor([int(c) in forgotten for c in ds.y[f]], dtype=torch.bool),
        x_holdout=ds.x[h],
        y_holdout=ds.y[h],
        num_classes=len(ds.classes),
        forget_unseen=torch.tensor([split.is_holdout(s) for s in split.forget], dtype=torch.bool),
    )


def method_config(method: str, config: dict | None, ds: Dataset | None = None, card: ModelCard | None = None):
    """Validate a method's settings (pydantic) -> its config object.

    Retrain starts from the card's recipe (or the dataset's preset); without a card only the given
    settings are checked, which is how a batch's parameters are checked before anything is claimed.
    """
    cls = get_method(method).config
    if cls is None:
        return None
    base = {}
    if cls is TrainConfig and card is not None and ds is not None:
        base = dict(card.lineage.get("train_config") or TrainConfig.preset(ds.kind).model_dump())
    base.update(config or {})
    try:
        return cls(**base)
    except ValidationError as e:
        raise UsageError(f"invalid settings for method {method!r}: {validation_problems(e)}") from None


def check_compatible(card: ModelCard, ds: Dataset, split: Split) -> None:
    if list(ds.classes) != card.classes or list(ds.input_shape) != card.input_shape:
        raise ModelError(
            f"model (classes {card.classes}, input {card.input_shape}) does not fit dataset "
            f"{ds.name!r} (classes {list(ds.classes)}, input {list(ds.input_shape)})"
        )
    if abs(card.holdout_fraction - split.holdout_fraction) > 1e-12 or card.holdout_salt != split.holdout_salt:
        raise ModelError(
            f"the split's holdout ({split.holdout_fraction}, salt {split.holdout_salt!r}) differs from "
            f"the model's ({card.holdout_fraction}, salt {card.holdout_salt!r}): the model may have "
            "trained on the calibration data"
        )


def unlearn_stage(
    model_dir: str | Path,
    dataset: DatasetRef,
    split_dir: str | Path,
    out_dir: str | Path,
    method: str = "rfau",
    config: dict | None = None,
    command: str = "unlearn",
) -> UnlearnInfo:
    """Forget the split's forget set -> merged weights, model card, adapter (RFAU), unlearn.json.
    ``command``: what the output folder is marked as written by (see rfau.io.claim_output)."""
    claim_output(out_dir, command)  # before the model is read and unlearned
    ds = _ds(dataset)
    split = read_split(split_dir)
    model, card = load_checkpoint(model_dir)
    ds = get_family(card.family).prepare_dataset(ds, card)  # model families: e.g. tokenise text
    check_compatible(card, ds, split)
    if not split.forget:
        raise RfauError(f"{split_dir}: the forget set is empty; nothing to unlearn")
    cfg = method_config(method, config, ds, card)
    check_method(card.family, method, cfg, ds)  # model families: a method that cannot run says why
    result = run_method(method, model, unlearn_data(ds, split), cfg)
    info = UnlearnInfo(
        method=method,
        config=cfg.model_dump() if cfg else {},
        seconds=result.seconds,
        trainable_params=result.trainable_params,
        total_params=result.total_params,
        trainable_share=result.trainable_params / result.total_params,
        forget_sha256=split.forget_hash,
        request_ids=split.request_ids,
        history=result.info.history,
        regime=forget_regime(split, ds),  # what the split asks for, whatever the method
        details=result.info.facts(),  # the method's own (its info_model)
    )
    new_card = card.model_copy(
        update={
            "train_manifest_sha256": ids_hash(split.retain),
            "train_samples": len(split.retain),
            "metrics": {},
            "lineage": {
                "kind": "unlearned",
                "parent_weights_sha256": card.weights_sha256,
                "method": method,
                "forget_sha256": split.forget_hash,
                "request_ids": split.request_ids,
                **_recipe(card, method, cfg),
            },
        }
    )
    with atomic_dir(out_dir, command) as tmp:
        if result.adapter is not None:
            _save_adapter(result.adapter, tmp / "adapter")
        save_checkpoint(result.model.cpu(), new_card, tmp)
        save_serving_example(ds, tmp)
        info.write(tmp / "unlearn.json")
    return info


def _recipe(card: ModelCard, method: str, cfg) -> dict:
    """The training recipe carried down the lineage, so that a later retrain reruns it: retrain's
    own, else the parent's (an imported model has none)."""
    if method == "retrain" and isinstance(cfg, TrainConfig):
        return {"train_config": cfg.model_dump()}
    recipe = card.lineage.get("train_config")
    return {"train_config": recipe} if recipe else {}


def _save_adapter(adapter: torch.nn.Module, out_dir: Path) -> None:
    """The deletion delta in peft's own format (``save_pretrained``), the only one written."""
    from peft import PeftModel

    if not isinstance(adapter, PeftModel):
        raise ModelError(f"cannot save a {type(adapter).__name__} adapter: only peft adapters are saved")
    adapter.save_pretrained(str(out_dir))


def evaluate_stage(
    model_dir: str | Path, dataset: DatasetRef, split_dir: str | Path, out_path: str | Path, seed: int = 0
) -> Evaluation:
    """UA, RA, TA, per-class accuracy and MIA-efficacy of one model on one split -> JSON. An
    existing ``out_path`` is replaced only when it is an evaluation already (see rfau.io)."""
    claim_output_file(out_path, "evaluate", is_evaluation)  # before the model is evaluated
    ds = _ds(dataset)
    split = read_split(split_dir)
    model, card = load_checkpoint(model_dir)
    ds = get_family(card.family).prepare_dataset(ds, card)  # model families: e.g. tokenise text
    check_compatible(card, ds, split)
    metrics = Evaluation.model_validate(
        {**evaluate_model(model, ds, split, seed=seed), "model_weights_sha256": card.weights_sha256}
    )
    metrics.write(out_path)
    return metrics


def is_evaluation(path: Path) -> bool:
    """Whether ``path`` holds an evaluation (what `rfau evaluate` writes), so may be replaced."""
    try:
        Evaluation.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


__all__ = ["split_stage", "train_stage", "unlearn_stage", "evaluate_stage"]
