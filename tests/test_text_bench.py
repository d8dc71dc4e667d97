"""Issue 12's pre-trained text demo: Debian's fortunes as a labelled text set, the all-MiniLM-L6-v2
extra, frozen-prefix caching on transformers encoders, and retrain from the pre-trained backbone.

The transformers models here are tiny and randomly initialised (a 2-layer BERT saved with
save_pretrained, as in tests/test_families.py); MiniLM itself is only unpacked where the extra is
installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from rfau.data import load_dataset
from rfau.data.fortunes import CATEGORIES, load_fortunes, read_category
from rfau.errors import DatasetError

WORDS = {
    "computers": "kernel compiler bug program memory disk unix byte",
    "definitions": "noun verb meaning word defined adjective term sense",
    "politics": "senate vote law president party election congress tax",
    "science": "atom physics energy theory experiment cell gravity light",
    "songs-poems": "love heart sing song rhyme verse moon night",
}


def write_fortunes(folder: Path, per_category: int = 30) -> Path:
    """A fortunes folder in Debian's format: one file per category, records between '%' lines
    (one empty record, and an overstruck word, as the real files have)."""
    folder.mkdir(parents=True, exist_ok=True)
    for c, category in enumerate(CATEGORIES):
        words = WORDS[category].split()
        records = [
            " ".join(words[(n + k) % len(words)] for k in range(4 + n % 3)) for n in range(per_category)
        ]
        records[1] = ""  # an empty record: skipped, its index not reused
        records[2] = "_\bb_\bo_\bl_\bd " + records[2]  # overstrike (underlined 'bold')
        (folder / category).write_text("\n%\n".join(records) + "\n%\n")
        (folder / f"{category}.dat").write_bytes(bytes(c))  # strfile's index: not a category
    return folder


def test_fortune_files_read_as_records_with_stable_ids(tmp_path):
    folder = write_fortunes(tmp_path / "fortunes")
    records = read_category(folder / "science")
    assert [i for i, _ in records][:3] == [0, 2, 3]  # the empty record 1 is skipped, not renumbered
    assert records[1][1].startswith("bold energy theory")  # overstrike removed, whitespace collapsed

    ds = load_dataset(f"fortunes:{folder}")
    assert ds.kind == "text" and ds.classes == CATEGORIES
    assert len(ds.ids) == 5 * 29 and "science/2" in ds.ids and "science/1" not in ds.ids
    assert {ds.classes[int(y)] for i, y in zip(ds.ids, ds.y) if i.startswith("politics/")} == {"politics"}
    assert 0 < int(ds.is_test.sum()) < len(ds.ids)  # the seeded split by id
    assert "sha256('rfau-text-split:0:<id>')" in ds.split_rule

    again = load_fortunes(folder, categories=("science", "politics"))
    assert again.classes == ("politics", "science")  # a subset: the same ids and the same split
    test_of = dict(zip(ds.ids, ds.is_test.tolist()))
    assert all(test_of[i] == t for i, t in zip(again.ids, again.is_test.tolist()))


def test_fortunes_refuses_a_missing_folder_or_category(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="fortunes not found at .*make fortunes"):
        load_dataset(f"fortunes:{tmp_path / 'nowhere'}")
    folder = write_fortunes(tmp_path / "f")
    (folder / "politics").unlink()
    with pytest.raises(DatasetError, match=r"no category file\(s\) \['politics'\]"):
        load_fortunes(folder)
    monkeypatch.setenv("RFAU_FORTUNES", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="RFAU_FORTUNES"):
        load_dataset("fortunes")
