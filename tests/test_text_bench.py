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


# --- frozen-prefix caching on a transformers encoder --------------------------------------------


def tiny_bert(num_labels: int = 3, layers: int = 3):
    """rfau's wrapper around a randomly initialised BERT of ``layers`` layers (hidden size 16)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from rfau.models.families.hf import TextClassifier

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
    )
    return TextClassifier(BertForSequenceClassification(config)).eval()


def token_batch(n: int = 6, length: int = 12, seed: int = 0):
    """Token ids and attention masks [n, 2, length], some rows padded."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 40, (n, length), generator=gen)
    lengths = torch.randint(3, length + 1, (n,), generator=gen)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return torch.stack([ids * mask, mask], 1)


@pytest.mark.parametrize(
    ("modules", "cut"),
    [
        (["net.bert.encoder.layer.2.attention.self.query"], 3),  # embeddings + layers 0, 1 cached
        (["layer.1.attention.self.value", "net.bert.encoder.layer.2"], 2),  # suffix names, taps
        (["net.classifier"], 3),  # only the head: the last layer still runs
        (["net.bert.embeddings.word_embeddings"], 0),  # nothing can be cached
    ],
)
def test_cached_prefix_gives_the_full_forward_logits(modules, cut):
    import torch

    from rfau.models.families import expand_module_names
    from rfau.models.families.prefix import prefix_cut, run_from, run_to

    model, x = tiny_bert(), token_batch()
    names = expand_module_names(model, modules)
    assert prefix_cut(model, names) == cut
    with torch.no_grad():
        h = run_to(model, x, cut)
        assert h.shape == ((6, 12, 17) if cut else x.shape)  # hidden size 16 + the mask channel
        torch.testing.assert_close(run_from(model, h, cut), model(x), rtol=1e-5, atol=1e-6)
    assert len(model.net.bert.encoder.layer) == 3  # the layer list is restored after the run


def test_rfau_on_a_transformer_runs_from_the_cached_prefix():
    import torch

    from rfau.methods import UnlearnData, run_method

    model, x = tiny_bert(), token_batch(60, seed=1)
    y = torch.arange(60) % 3
    data = UnlearnData(
        x_retain=x[:40],
        y_retain=y[:40],
        x_forget=x[40:45],
        y_forget=y[40:45],
        forget_classwise=torch.zeros(5, dtype=torch.bool),
        x_holdout=x[45:],
        y_holdout=y[45:],
        num_classes=3,
    )
    settings = {"target_modules": "layer.2.attention.self.query,layer.2.attention.self.value", "epochs": 2}
    result = run_method("rfau", model, data, {**settings, "device": "cpu"})
    assert result.info["cached_prefix_stages"] == 3  # the embeddings and layers 0-1 ran once
    assert result.info["taps"] == ["net.bert.encoder.layer.2", "net.classifier"]
    assert torch.isfinite(result.model(x)).all()
