"""Text datasets: records with a stable id, a text and a label, from CSV, JSONL or Parquet.

Columns: ``id`` (the sample id that deletion requests name; the same rules as image ids),
``text``, ``label`` (a class name) and optionally ``split`` (``train`` or ``test``). Without a
split column the test split is a seeded draw *by id*: a record is a test record when
sha256("rfau-text-split:<seed>:<id>") falls below the test fraction; the rule is written into the
dataset's ``split_rule`` (and name), and records added later never move existing ones.

A ``TextDataset`` is a ``Dataset`` (a sibling of ``ImageDataset``) whose ``x`` holds, once
tokenised with the model's own tokenizer (``tokenized``, cached on disk), token ids and attention
mask stacked as int64 [N, 2, L]; before that ``x`` is empty [N, 0] (splitting and requests need ids
and labels only).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rfau.data.base import Dataset, subset_dataset
from rfau.data.ids import unsafe_id_reason
from rfau.data.sources import is_text_source
from rfau.errors import DatasetError, ModelError
from rfau.io import sha256_file

TEST_FRACTION = 0.2
SPLIT_SEED = 0
COLUMNS = ("id", "text", "label")
CACHE_VERSION = "v1"


@dataclass(frozen=True)
class TextDataset(Dataset):
    texts: tuple[str, ...] = ()
    source_sha256: str = ""
    split_rule: str = ""

    def tokenized(
        self, spec: TokenizerSpec, max_length: int, cache_dir: str | Path | None = None
    ) -> TextDataset:
        """This dataset with ``x`` = [N, 2, max_length] token ids and attention mask, tokenised
        once per (data, tokenizer, length) and cached as .npz (no pickles)."""
        key = hashlib.sha256(
            f"{self.source_sha256}|{spec.sha256}|{max_length}|{CACHE_VERSION}".encode()
        ).hexdigest()[:24]
        cached = Path(cache_dir or _default_cache()) / "text" / f"{key}.npz"
        if cached.exists():
            with np.load(cached, allow_pickle=False) as z:
                x = torch.from_numpy(z["x"])
        else:
            x = spec.encode(list(self.texts), max_length)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npz")
            np.savez(tmp, x=x.numpy())
            tmp.replace(cached)
        return replace(self, x=x, index=self.index)


@dataclass(frozen=True)
class TokenizerSpec:
    """A model's tokenizer as the card keeps it: tokenizer.json text and the padding token."""

    tokenizer_json: str
    pad_token_id: int
    pad_token: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.tokenizer_json.encode()).hexdigest()

    @classmethod
    def from_pretrained(cls, folder: Path) -> TokenizerSpec:
        """The tokenizer saved beside a transformers model (local files only)."""
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelError(f"{folder}: no usable tokenizer beside the model ({e}); save it there") from None
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None or tok.pad_token_id is None:
            raise ModelError(f"{folder}: the tokenizer must be a fast tokenizer with a padding token")
        return cls(backend.to_str(), int(tok.pad_token_id), str(tok.pad_token))

    @classmethod
    def from_card(cls, prep: dict) -> TokenizerSpec:
        try:
            return cls(prep["tokenizer_json"], int(prep["pad_token_id"]), str(prep["pad_token"]))
        except KeyError as e:
            raise ModelError(f"the model card's preprocessing has no {e.args[0]!r}") from None

    def to_card(self) -> dict:
        return {
            "tokenizer_json": self.tokenizer_json,
            "pad_token_id": self.pad_token_id,
            "pad_token": self.pad_token,
        }

    def _tokenizer(self):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self.tokenizer_json)
        tok.no_truncation()
        tok.no_padding()
        return tok

    def longest(self, texts: tuple[str, ...] | list[str]) -> int:
        """Tokens in the longest text (special tokens included)."""
        return max((len(e.ids) for e in self._tokenizer().encode_batch(list(texts))), default=1)

    def encode(self, texts: list[str], max_length: int) -> torch.Tensor:
        tok = self._tokenizer()
        tok.enable_truncation(max_length)
        tok.enable_padding(pad_id=self.pad_token_id, pad_token=self.pad_token, length=max_length)
        enc = tok.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long).reshape(len(texts), max_length)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long).reshape(len(texts), max_length)
        return torch.stack([ids, mask], 1)


def subset_text_dataset(
    ds: TextDataset, train_per_class: int | None, test_per_class: int | None
) -> TextDataset:
    """``subset_dataset`` (the first N training and M test records of each class, in id order)
    that keeps the texts; the subset's ids enter ``source_sha256`` (the tokenised cache's key)."""
    sub = subset_dataset(ds, train_per_class, test_per_class)
    if sub is ds:
        return ds
    texts = tuple(ds.texts[i] for i in ds.indices(sub.ids).tolist())
    digest = hashlib.sha256("\n".join((ds.source_sha256, *sub.ids)).encode()).hexdigest()
    return replace(
        ds,
        name=sub.name,
        ids=sub.ids,
        x=sub.x,
        y=sub.y,
        is_test=sub.is_test,
        texts=texts,
        source_sha256=digest,
        index={},
    )


def load_text_dataset(
    source: str | Path, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> TextDataset:
    """Records from a CSV/JSONL/Parquet file -> a TextDataset (not yet tokenised)."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise DatasetError(f"text dataset {str(source)!r} not found")
    records = _read_records(path)
    rule = "column 'split'" if records and "split" in records[0] else _seeded_rule(test_fraction, seed)
    return _assemble(str(path), records, rule, test_fraction, seed, _sha256(path))


def records_dataset(
    name: str,
    records: list[dict],
    source_sha256: str,
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
) -> TextDataset:
    """Records (``id``, ``text``, ``label``, optionally ``split``) read by another loader (e.g.
    rfau.data.fortunes) -> a TextDataset, with the same checks and the same seeded split by id;
    ``source_sha256`` names the source's content (the tokenised cache's key)."""
    rule = "column 'split'" if records and "split" in records[0] else _seeded_rule(test_fraction, seed)
    return _assemble(name, records, rule, test_fraction, seed, source_sha256)


def _sha256(path: Path) -> str:

    return sha256_file(path)


def _seeded_rule(fraction: float, seed: int) -> str:
    return f"test if sha256('rfau-text-split:{seed}:<id>') < {fraction}"


def _in_test(sample_id: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"rfau-text-split:{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _read_records(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        if suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8").splitlines()
            return [_json_record(line, i + 1, path) for i, line in enumerate(lines) if line.strip()]
        if suffix == ".parquet":
            return _read_parquet(path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read text dataset {str(path)!r}: {e}") from None
    raise DatasetError(f"{str(path)!r}: a text dataset is a .csv, .jsonl or .parquet file")


def _json_record(line: str, number: int, path: Path) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path.name} line {number}: not JSON: {e}") from None
    if not isinstance(record, dict):
        raise DatasetError(f"{path.name} line {number}: a record must be a JSON object")
    return record


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pandas as pd
    except ImportError:
        raise DatasetError("reading Parquet needs pandas and pyarrow; give CSV or JSONL instead") from None
    try:
        return pd.read_parquet(path).to_dict("records")
    except (ImportError, ValueError, OSError) as e:
        raise DatasetError(f"cannot read Parquet file {str(path)!r}: {e}") from None


def _assemble(
    name: str, records: list[dict], rule: str, fraction: float, seed: int, digest: str
) -> TextDataset:

    if not records:
        raise DatasetError(f"text dataset {name!r} holds no records")
    missing = [c for c in COLUMNS if c not in records[0]]
    if missing:
        raise DatasetError(f"text dataset {name!r} lacks column(s) {missing}; it needs {list(COLUMNS)}")
    ids, texts, labels, is_test, seen = [], [], [], [], set()
    for n, r in enumerate(records, 1):
        sid, text, label = (r.get(c) for c in COLUMNS)
        sid = "" if sid is None else str(sid)
        if not isinstance(text, str) or label is None or str(label) == "":
            raise DatasetError(f"text dataset {name!r} record {n}: needs a text and a label")
        if reason := unsafe_id_reason(sid):
            raise DatasetError(f"text dataset {name!r} record {n}: id {sid!r}: {reason}")
        if sid in seen:
            raise DatasetError(f"text dataset {name!r}: id {sid!r} occurs twice")
        seen.add(sid)
        ids.append(sid)
        texts.append(text)
        labels.append(str(label))
        is_test.append(_split_of(r, sid, n, name, fraction, seed) == "test")
    return _dataset(name, ids, texts, labels, is_test, rule, digest)


def _split_of(record: dict, sid: str, n: int, name: str, fraction: float, seed: int) -> str:
    if "split" not in record:
        return "test" if _in_test(sid, fraction, seed) else "train"
    split = str(record["split"])
    if split not in ("train", "test"):
        raise DatasetError(f"text dataset {name!r} record {n}: split {split!r} is neither 'train' nor 'test'")
    return split


def _dataset(
    name: str, ids: list, texts: list, labels: list, is_test: list, rule: str, digest: str
) -> TextDataset:
    classes = sorted({lab for lab, t in zip(labels, is_test) if not t})
    unknown = sorted({lab for lab, t in zip(labels, is_test) if t} - set(classes))
    if unknown:
        raise DatasetError(f"text dataset {name!r}: test labels {unknown} have no training records")
    if not any(is_test) or all(is_test):
        raise DatasetError(f"text dataset {name!r} needs both training and test records ({rule})")
    cidx = {c: i for i, c in enumerate(classes)}
    return TextDataset(
        name=name,
        ids=tuple(ids),
        x=torch.zeros((len(ids), 0), dtype=torch.long),
        y=torch.tensor([cidx[lab] for lab in labels], dtype=torch.long),
        is_test=torch.tensor(is_test),
        classes=tuple(classes),
        kind="text",
        texts=tuple(texts),
        source_sha256=digest,
        split_rule=rule,
    )


def _default_cache() -> Path:
    return Path(os.environ.get("RFAU_CACHE_DIR", Path.home() / ".cache" / "rfau"))


__all__ = [
    "TextDataset",
    "TokenizerSpec",
    "is_text_source",
    "load_text_dataset",
    "records_dataset",
    "subset_text_dataset",
]
