"""What tests start from: the digits original (trained once per session), a registry seeded with
it, and a user's own tiny Hugging Face model saved as a user would save it."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path

from filelock import FileLock

# RFAU settings for the plumbing of a user's model (its quality is not what these tests check)
FAST_RFAU = {"epochs": 2, "retain_budget": 96, "batch_size": 48, "forget_batch_size": 16}


def build_digits_original(path: Path) -> Path:
    """The digits original exactly as a first batch bootstraps it (the default recipe, seed 0),
    with its evaluation on the empty split, at ``path``: built once (the first process to take
    the lock builds it, the others wait and reuse it)."""
    with FileLock(str(path) + ".lock"):
        if not (path / "metrics.json").is_file():
            from rfau.data import load_dataset
            from rfau.data.split import make_split, write_split
            from rfau.stages import evaluate_stage, train_stage

            ds = load_dataset("digits")
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            train_stage(ds, tmp / "model")
            write_split(make_split(ds, []), tmp / "split")
            evaluate_stage(tmp / "model", ds, tmp / "split", tmp / "metrics.json")
            tmp.rename(path)
    return path


def register_original(original: Path, state_dir: Path, **settings):
    """A registry at ``state_dir`` whose champion is ``original``, as a first batch bootstraps it."""
    from rfau.records import Evaluation, GateReport
    from rfau.tracking.registry import Registry
    from rfau.tracking.settings import TrackingSettings
    from rfau.tracking.versions import register

    s = TrackingSettings(state_dir=Path(state_dir), **settings)
    evaluation = Evaluation.read(original / "metrics.json")
    register(Registry(s), original / "model", evaluation, GateReport.original())
    return s


def copy_registry(template: Path, state_dir: Path) -> None:
    """A copy of the local registry ``template`` at ``state_dir`` (a fresh MLflow database and the
    model's torch.export cost about 8 s a test), its absolute paths moved to the new folder."""
    shutil.copytree(template, state_dir)
    move_paths(state_dir, str(template), str(state_dir))


def move_paths(state_dir: Path, old: str, new: str) -> None:
    """Point a copied local MLflow store at its new folder: the absolute paths MLflow keeps in its
    database (experiment, run, logged-model and version locations) and in each MLmodel file."""
    with contextlib.closing(sqlite3.connect(state_dir / "mlflow.db")) as db, db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for _, col, kind, *_ in db.execute(f'pragma table_info("{table}")').fetchall():
                if "CHAR" in kind.upper() or "TEXT" in kind.upper():
                    db.execute(f'update "{table}" set "{col}" = replace("{col}", ?, ?)', (old, new))
    for mlmodel in state_dir.rglob("MLmodel"):
        mlmodel.write_text(mlmodel.read_text().replace(old, new))


def request(path: Path, rid: str, sample_ids=(), classes=()) -> Path:
    body = {"request_id": rid, "sample_ids": list(sample_ids), "classes": list(classes)}
    path.write_text(json.dumps({**body, "reason": "test", "received_at": "2026-01-01T00:00:00Z"}))
    return path


def save_vit(folder: Path, labels: list[str] | None) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    kw = (
        {"id2label": dict(enumerate(labels)), "label2id": {c: i for i, c in enumerate(labels)}}
        if labels
        else {}
    )
    config = ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=10,
        **kw,
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    processor = {
        "image_mean": [0.5],
        "image_std": [0.5],
        "do_normalize": True,
        "size": {"height": 8, "width": 8},
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def save_bert(
    folder: Path, words: list[str], labels: list[str] | None = None, layers: int = 2, seed: int = 0
) -> Path:
    """A tiny transformers BERT saved with save_pretrained, its fast word-level tokenizer (``words``
    and the special tokens) beside it: a sequence classifier over ``labels``, or without labels
    the bare encoder, laid out as a pre-trained backbone (MiniLM's) is."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    ).save_pretrained(folder)
    head = (
        {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {c: i for i, c in enumerate(labels)},
        }
        if labels
        else {}
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        **head,
    )
    torch.manual_seed(seed)
    (BertForSequenceClassification if labels else BertModel)(config).save_pretrained(folder)
    return folder
