"""Text records from a Hugging Face `datasets` folder written by save_to_disk: the same stable-id
dataset as the same records in JSONL, a DatasetDict's train/test splits, ClassLabel names, column
options in the source, and clear errors (missing columns, the library not installed)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from rfau.data.datasets import load_dataset
from rfau.errors import DatasetError

RECORDS = [
    {"id": f"note-{n:02d}", "text": f"words {n} " * (1 + n % 4), "label": ["bad", "good", "meh"][n % 3]}
    for n in range(30)
]


def _same(a, b) -> None:
    assert (a.ids, a.texts, a.classes, a.kind) == (b.ids, b.texts, b.classes, b.kind)
    assert torch.equal(a.y, b.y) and torch.equal(a.is_test, b.is_test)
    assert a.split_rule == b.split_rule


def test_a_saved_dataset_is_the_same_dataset_as_its_records_in_jsonl(tmp_path):
    datasets = pytest.importorskip("datasets")
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    datasets.Dataset.from_list(RECORDS).save_to_disk(str(tmp_path / "notes"))
    saved, plain = load_dataset(str(tmp_path / "notes")), load_dataset(str(jsonl))
    _same(saved, plain)  # the seeded split by id: the same records are test records
    assert saved.is_test.any() and saved.name == str(tmp_path / "notes")


def test_a_dataset_dict_with_class_labels_and_own_column_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    names = ["bad", "good", "meh"]
    features = datasets.Features(
        {
            "guid": datasets.Value("string"),
            "sentence": datasets.Value("string"),
            "mood": datasets.ClassLabel(names=names),
        }
    )

    def part(rows):
        rows = [{"guid": r["id"], "sentence": r["text"], "mood": names.index(r["label"])} for r in rows]
        return datasets.Dataset.from_list(rows, features=features)

    dd = datasets.DatasetDict(train=part(RECORDS[:24]), test=part(RECORDS[24:]), validation=part(RECORDS[:3]))
    dd.save_to_disk(str(tmp_path / "moods"))
    source = f"{tmp_path / 'moods'}?id=guid&text=sentence&label=mood"
    ds = load_dataset(source)
    jsonl = tmp_path / "moods.jsonl"
    split = ["train"] * 24 + ["test"] * 6
    jsonl.write_text("".join(json.dumps({**r, "split": s}) + "\n" for r, s in zip(RECORDS, split)))
    plain = load_dataset(str(jsonl))
    assert ds.ids == plain.ids and ds.classes == tuple(names)  # ClassLabel ints -> their names
    assert torch.equal(ds.y, plain.y) and torch.equal(ds.is_test, plain.is_test)
    assert "left out: validation" in ds.split_rule

    with pytest.raises(DatasetError, match=r"lacks column\(s\) id \('id'\), text \('text'\).*guid"):
        load_dataset(str(tmp_path / "moods"))
    with pytest.raises(DatasetError, match=r"unknown column option\(s\) \['txt'\]"):
        load_dataset(f"{tmp_path / 'moods'}?txt=sentence")


def test_without_the_datasets_library_the_error_names_the_extra(tmp_path, monkeypatch):
    folder = tmp_path / "saved"
    folder.mkdir()
    for marker in ("state.json", "dataset_info.json"):
        (folder / marker).write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as where rfau[text] is not installed
    with pytest.raises(DatasetError, match=r"needs the `datasets` library.*pip install 'rfau\[text\]'"):
        load_dataset(str(folder))
