"""Issue 12's pre-trained text demo: Debian's fortunes as a labelled text set, the all-MiniLM-L6-v2
extra, frozen-prefix caching on transformers encoders, and retrain from the pre-trained backbone.

The transformers models here are tiny and randomly initialised (a 2-layer BERT saved with
save_pretrained, as in tests/unit/test_families.py); MiniLM itself is only unpacked where the extra is
installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from rfau.data import load_dataset
from rfau.data.fortunes import CATEGORIES, load_fortunes, read_category
from rfau.errors import DatasetError
from tests.support.builders import save_bert

WORDS = {
    "computers": "kernel compiler bug program memory disk unix byte",
    "definitions": "noun verb meaning word defined adjective term sense",
    "politics": "senate vote law president party election congress tax",
    "science": "atom physics energy theory experiment cell gravity light",
    "songs-poems": "love heart sing song rhyme verse moon night",
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Tokenised texts and the unpacked MiniLM go to the test's own cache folder."""
    monkeypatch.setenv("RFAU_CACHE_DIR", str(tmp_path / "cache"))


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


def test_debians_fortunes_hold_the_documented_categories():
    from rfau.data.fortunes import DEBIAN_FORTUNES

    if not (DEBIAN_FORTUNES / "computers").is_file():
        pytest.skip(
            f"Debian's fortunes are not installed at {DEBIAN_FORTUNES}: run `make fortunes` (as root)"
        )
    ds = load_dataset("fortunes")
    assert ds.classes == CATEGORIES
    per_class = [int((ds.y == c).sum()) for c in range(len(CATEGORIES))]
    assert min(per_class) >= 600  # enough for the bench's 150 training + 50 test records per class
    assert min(int(((ds.y == c) & ds.is_test).sum()) for c in range(len(CATEGORIES))) >= 50


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
    assert result.info.cached_prefix_stages == 3  # the embeddings and layers 0-1 ran once
    assert result.info.taps == ["net.bert.encoder.layer.2", "net.classifier"]
    assert torch.isfinite(result.model(x)).all()


# --- the all-MiniLM-L6-v2 extra ----------------------------------------------------------------


def test_minilm_without_the_extra_says_how_to_install_it(monkeypatch):
    import importlib.metadata

    from rfau.models.families.minilm import ExtraNotInstalled, minilm_folder

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ExtraNotInstalled, match=r"pip install 'rfau\[text\]'"):
        minilm_folder()


def test_minilm_is_unpacked_once_from_the_extra(tmp_path):
    from rfau.models.families.minilm import ExtraNotInstalled, minilm_folder

    try:
        folder = minilm_folder(tmp_path)
    except ExtraNotInstalled as e:
        pytest.skip(f"the rfau[text] extra is not installed here ({e})")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert minilm_folder(tmp_path) == folder  # the second call finds it unpacked
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


# --- retrain from the pre-trained backbone -------------------------------------------------------


def tiny_backbone(folder: Path) -> Path:
    """A pre-trained-encoder folder as MiniLM's is laid out: a BertModel (no head) saved with
    save_pretrained, its fast tokenizer beside it (the words of the hand-made fortunes)."""
    words = sorted({w for text in WORDS.values() for w in text.split()} | {"bold"})
    return save_bert(folder, words, layers=3, seed=1)


def test_retrain_starts_from_the_backbone_with_the_same_fine_tune(tmp_path):
    import torch

    from rfau.config import TrainConfig
    from rfau.data.demo import demo_request
    from rfau.data.split import read_split
    from rfau.data.text import TokenizerSpec
    from rfau.models.checkpoint import load_checkpoint
    from rfau.models.families.backbone import (
        BackboneRecipe,
        classifier_from_backbone,
        finetune,
        finetune_original,
    )
    from rfau.stages import split_stage, unlearn_stage

    backbone = tiny_backbone(tmp_path / "backbone")
    ds = load_fortunes(write_fortunes(tmp_path / "fortunes", per_category=16))
    recipe = BackboneRecipe(backbone=str(backbone), trainable_layers=1, max_length=12)
    cfg = TrainConfig(epochs=2, batch_size=16, optimizer="adam", lr=1e-3, augment_pad=0, augment_flip=False)
    card = finetune_original(ds, tmp_path / "original", cfg, recipe)
    assert card.backbone["trainable_layers"] == 1 and len(card.backbone["weights_sha256"]) == 64

    split_stage(ds, [demo_request(ds, "class", tmp_path / "requests")], tmp_path / "split")
    info = unlearn_stage(tmp_path / "original", ds, tmp_path / "split", tmp_path / "retrain", "retrain", {})
    retrained, retrained_card = load_checkpoint(tmp_path / "retrain")
    assert retrained_card.backbone == card.backbone  # kept through unlearning, for the next retrain
    assert info.trainable_params < info.total_params / 2  # the last layer, the pooler and the head

    # the same recipe by hand: the backbone under a fresh head (seed 0), fine-tuned on the retain set
    tds = ds.tokenized(TokenizerSpec.from_pretrained(backbone), 12)
    retain = tds.indices(read_split(tmp_path / "split").retain)
    expected = classifier_from_backbone(backbone, list(ds.classes), seed=0)
    finetune(expected, tds.x[retain], tds.y[retain], cfg.model_copy(update={"device": "cpu"}), 1)
    for (name, got), want in zip(retrained.state_dict().items(), expected.state_dict().values()):
        torch.testing.assert_close(got, want, msg=lambda m, name=name: f"{name}: {m}")

    original, _ = load_checkpoint(tmp_path / "original")
    head = "net.classifier.weight"
    assert not torch.equal(
        retrained.state_dict()[head], original.state_dict()[head]
    )  # not the fine-tuned start


def test_retrain_refuses_an_imported_text_model_without_a_backbone():
    import torch

    from rfau.errors import ModelError
    from rfau.methods import UnlearnData, run_method

    model, x = tiny_bert(), token_batch(12)
    y = torch.arange(12) % 3
    data = UnlearnData(x[:8], y[:8], x[8:10], y[8:10], torch.zeros(2, dtype=torch.bool), x[10:], y[10:], 3)
    with pytest.raises(ModelError, match="records no pre-trained backbone"):
        run_method("retrain", model, data, {"device": "cpu", "augment_pad": 0, "augment_flip": False})


def test_the_text_bench_loads_its_fortunes_subset(tmp_path):
    from rfau.bench import CONFIGS, load_bench_dataset
    from rfau.data.text import TextDataset

    cfg = CONFIGS["text-minilm"].model_copy(update={"train_per_class": 10, "test_per_class": 2})
    assert cfg.backbone is not None and set(cfg.scenarios) == {"class", "random"}
    ds = load_bench_dataset(cfg, str(write_fortunes(tmp_path / "fortunes")))
    assert isinstance(ds, TextDataset) and ds.classes == CATEGORIES
    assert int((~ds.is_test).sum()) == 5 * 10 and int(ds.is_test.sum()) <= 5 * 2
    full = load_fortunes(tmp_path / "fortunes")
    assert all(ds.texts[i] == full.texts[full.index[sid]] for i, sid in enumerate(ds.ids))  # texts kept
    assert ds.source_sha256 != full.source_sha256  # the tokenised cache tells the subset apart


@pytest.mark.parametrize("method", ["finetune", "neggrad_plus"])
def test_the_text_bench_baselines_run_on_token_ids(method):
    import torch

    from rfau.methods import UnlearnData, run_method

    model, x = tiny_bert(), token_batch(12)
    y = torch.arange(12) % 3
    data = UnlearnData(x[:8], y[:8], x[8:10], y[8:10], torch.zeros(2, dtype=torch.bool), x[10:], y[10:], 3)
    settings = {"device": "cpu", "augment_pad": 0, "augment_flip": False, "epochs": 1, "batch_size": 4}
    result = run_method(method, model, data, settings)
    assert result.trainable_params == result.total_params  # every weight trains
    assert not torch.equal(result.model.net.classifier.weight, model.net.classifier.weight)
