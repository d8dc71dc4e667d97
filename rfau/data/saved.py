"""Text records from a Hugging Face ``datasets`` folder written by ``save_to_disk``.

A ``Dataset`` folder is read as a CSV file is: columns ``id``, ``text``, ``label`` and optionally
``split``, else the seeded split by id. A ``DatasetDict`` folder gives its ``train`` and ``test``
splits as the split (other splits, e.g. ``validation``, are left out and named in the split rule).
A ``ClassLabel`` label column gives its class names, not its integers. Other column names are
mapped in the source itself: ``reviews/?id=guid&text=sentence&label=sentiment`` (keys id, text,
label, split). The result is the same stable-id ``TextDataset`` the CSV/JSONL path makes from
the same records; ``datasets`` is the optional extra ``rfau[text]``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import parse_qsl

from rfau.data.sources import saved_dataset_path
from rfau.data.text import SPLIT_SEED, TEST_FRACTION, TextDataset, _assemble, _seeded_rule
from rfau.errors import DatasetError
from rfau.io import sha256_file

COLUMN_KEYS = ("id", "text", "label", "split")
SPLITS = ("train", "test")
EXTRA = "pip install 'rfau[text]'"


def column_map(source: str) -> dict[str, str]:
    """The source's column names by rfau's (``?text=sentence``: rfau's text is its 'sentence')."""
    query = source.partition("?")[2]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise DatasetError(f"dataset {source!r}: column options are KEY=COLUMN pairs joined by '&'") from None
    unknown = sorted({k for k, _ in pairs} - set(COLUMN_KEYS))
    if unknown:
        raise DatasetError(
            f"dataset {source!r}: unknown column option(s) {unknown}; known: {list(COLUMN_KEYS)}"
        )
    return {key: key for key in COLUMN_KEYS} | dict(pairs)


def load_saved_dataset(
    source: str, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> TextDataset:
    """A save_to_disk folder (``?col=name`` options, see the module) -> a TextDataset (not yet tokenised)."""
    path, columns = saved_dataset_path(source), column_map(source)
    loaded = _load_from_disk(path)
    if hasattr(loaded, "keys"):  # a DatasetDict: its splits are the split
        records, rule = _split_records(source, loaded, columns)
    else:
        records = [_record(source, row, loaded.features, columns, None) for row in loaded]
        has_split = columns["split"] in loaded.column_names
        rule = f"column {columns['split']!r}" if has_split else _seeded_rule(test_fraction, seed)
    return _assemble(source, records, rule, test_fraction, seed, _folder_sha256(path, columns))


def _load_from_disk(path: Path):
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"{path} is a Hugging Face datasets folder (save_to_disk); reading it needs the "
            f"`datasets` library, the optional extra rfau[text]: {EXTRA}"
        ) from None
    try:
        return datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"cannot read the datasets folder {str(path)!r}: {str(e)[:300]}") from None


def _split_records(source: str, loaded, columns: dict[str, str]) -> tuple[list[dict], str]:
    missing = [s for s in SPLITS if s not in loaded]
    if missing:
        raise DatasetError(
            f"dataset {source!r}: a DatasetDict needs splits {list(SPLITS)}; it has {sorted(loaded)}"
        )
    records = [
        _record(source, row, loaded[split].features, columns, split)
        for split in SPLITS
        for row in loaded[split]
    ]
    rule = "DatasetDict splits 'train' and 'test'"
    left_out = sorted(set(loaded) - set(SPLITS))
    return records, rule + (f" (left out: {', '.join(left_out)})" if left_out else "")


def _record(source: str, row: dict, features, columns: dict[str, str], split: str | None) -> dict:
    """One row as the CSV loader's record: rfau's column names, a ClassLabel's name as label."""
    needed = ("id", "text", "label")
    missing = [f"{key} ({columns[key]!r})" for key in needed if columns[key] not in row]
    if missing:
        raise DatasetError(
            f"dataset {source!r} lacks column(s) {', '.join(missing)}; it has {sorted(row)}. "
            "Map yours in the source: PATH?id=COLUMN&text=COLUMN&label=COLUMN"
        )
    record = {key: row[columns[key]] for key in needed}
    label_feature = features.get(columns["label"])
    if hasattr(label_feature, "int2str") and isinstance(record["label"], int):
        record["label"] = label_feature.int2str(record["label"])
    if split is not None:
        record["split"] = split
    elif columns["split"] in row:
        record["split"] = row[columns["split"]]
    return record


def _folder_sha256(path: Path, columns: dict[str, str]) -> str:
    """The folder's content (every file, by relative name) and the column mapping: the key of the
    tokenised cache, which changes when the data does."""

    digest = hashlib.sha256(repr(sorted(columns.items())).encode())
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path).as_posix()}:{sha256_file(f)}\n".encode())
    return digest.hexdigest()


__all__ = ["column_map", "load_saved_dataset"]
