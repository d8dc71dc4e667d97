"""Model families: a user's own Hugging Face image and text classifiers through split -> unlearn
(RFAU) -> evaluate, `rfau model import` with --register as the bootstrap champion, and the
refusals (pickle-only folders, label mismatch, unknown target modules, methods a family cannot run).

The models are tiny and randomly initialised, built here and saved with save_pretrained: a 2-layer
ViT on the embedded 8x8 digits, a 2-layer BERT with its own tokenizer on a generated text set."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rfau.data.datasets import load_dataset
from rfau.errors import DatasetError, ModelError, RequestError
from rfau.io import sha256_file
from rfau.models.checkpoint import load_checkpoint, read_card
from rfau.models.importer import import_model
from rfau.stages import evaluate_stage, split_stage, unlearn_stage
from tests.support.builders import FAST_RFAU, request, save_bert, save_vit

TOPICS = {
    "food": "bread cheese soup apple rice salad pasta bake cook taste",
    "sport": "ball goal team match run score coach race win field",
    "tech": "code chip data cloud robot screen laptop server wifi app",
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    return save_vit(tmp_path_factory.mktemp("vit"), [str(i) for i in range(10)])


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    """JSONL records (id, text, label) of three topics; no split column (the seeded split)."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("text") / "posts.jsonl"
    lines = []
    for n in range(150):
        label = list(TOPICS)[n % 3]
        words = rng.choices(TOPICS[label].split(), k=rng.randint(3, 9))
        lines.append(json.dumps({"id": f"post-{n:03d}", "text": " ".join(words), "label": label}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    words = sorted(" ".join(TOPICS.values()).split())
    return save_bert(tmp_path_factory.mktemp("bert"), words, labels=sorted(TOPICS))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RFAU_CACHE_DIR", str(tmp_path / "cache"))


def test_a_card_written_before_families_reads_as_rfau_family(tmp_path):
    from rfau.models.checkpoint import ModelCard

    card = ModelCard(
        architecture="small_cnn",
        classes=["0", "1"],
        input_shape=[1, 8, 8],
        dataset="digits",
        train_manifest_sha256="0" * 64,
        train_samples=1,
        holdout_fraction=0.1,
        holdout_salt="rfau-holdout-v1",
        weights_sha256="1" * 64,
    ).model_dump()
    for key in ("family", "source", "family_config", "preprocessing"):
        card.pop(key)
    (tmp_path / "model.json").write_text(json.dumps(card))
    assert read_card(tmp_path).family == "rfau"


# --- split -> unlearn (RFAU) -> evaluate ----------------------------------------------------------


def test_hf_image_model_is_imported_unlearned_and_evaluated(vit_dir, digits, tmp_path):
    card = import_model(vit_dir, "hf-image", digits, tmp_path / "model")
    assert (card.family, card.architecture, card.classes) == (
        "hf-image",
        "ViTForImageClassification",
        list(digits.classes),
    )
    assert card.preprocessing == {
        "image_mean": [0.5],
        "image_std": [0.5],
        "image_size": [8, 8],
        "num_channels": 1,
    }
    assert card.lineage["source_sha256"] == {"model.safetensors": sha256_file(vit_dir / "model.safetensors")}
    assert card.weights_sha256 == sha256_file(tmp_path / "model" / "model.safetensors")

    req = request(tmp_path / "r.json", "r1", sample_ids=["digits/1", "digits/2", "digits/3"], classes=["7"])
    split_stage(digits, [req], tmp_path / "split")
    info = unlearn_stage(
        tmp_path / "model", digits, tmp_path / "split", tmp_path / "unlearned", config=FAST_RFAU
    )
    extra = info.model_dump()
    # peft's attention query/value projections of both layers; taps at the last layer and the head
    assert len(extra["target_modules"]) == 4
    assert {t.rsplit(".", 1)[1] for t in extra["target_modules"]} in (
        {"query", "value"},
        {"q_proj", "v_proj"},
    )
    assert extra["taps"][-1] == "net.classifier" and extra["taps"][0].endswith(".1")
    assert 0 < info.trainable_share < 0.2

    unlearned = read_card(tmp_path / "unlearned")
    assert (
        unlearned.family == "hf-image" and unlearned.lineage["parent_weights_sha256"] == card.weights_sha256
    )
    assert unlearned.weights_sha256 != card.weights_sha256
    ev = evaluate_stage(tmp_path / "unlearned", digits, tmp_path / "split", tmp_path / "metrics.json")
    assert ev.regime == "mixed" and ev.counts.forget == 3 + int((digits.y[~digits.is_test] == 7).sum())
    # the weights file is the transformers model's own state dict: it loads without rfau
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForImageClassification

    net = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(vit_dir))
    load_model(net, str(tmp_path / "unlearned" / "model.safetensors"), strict=True)
    model, _ = load_checkpoint(tmp_path / "unlearned")
    x = digits.x[:4].float() / 255
    torch.testing.assert_close(model(x), net(pixel_values=(x - 0.5) / 0.5).logits)


def test_text_dataset_reads_records_with_a_seeded_split_by_id(text_file):
    ds = load_dataset(str(text_file))
    assert (ds.kind, ds.classes, len(ds.ids)) == ("text", ("food", "sport", "tech"), 150)
    assert ds.split_rule.startswith("test if sha256('rfau-text-split:0:<id>')")
    assert 0.1 < float(ds.is_test.float().mean()) < 0.3
    # the split depends on each id alone: the same records in another order split the same way
    lines = text_file.read_text().splitlines()
    shuffled = text_file.with_name("shuffled.jsonl")
    shuffled.write_text("\n".join(reversed(lines)) + "\n")
    again = load_dataset(str(shuffled))
    assert set(again.split_ids("test")) == set(ds.split_ids("test"))


def test_hf_text_model_is_imported_unlearned_and_evaluated(bert_dir, text_file, tmp_path):
    ds = load_dataset(str(text_file))
    card = import_model(bert_dir, "hf-text", ds, tmp_path / "model")
    assert card.family == "hf-text" and card.classes == ["food", "sport", "tech"]
    assert card.input_shape == [2, 11] == [2, card.preprocessing["max_length"]]  # [CLS] + 9 words + [SEP]
    train = ds.split_ids("train")
    req = request(tmp_path / "r.json", "r1", sample_ids=train[:4])
    split = split_stage(ds, [req], tmp_path / "split")
    assert split.forget == train[:4]
    info = unlearn_stage(tmp_path / "model", ds, tmp_path / "split", tmp_path / "unlearned", config=FAST_RFAU)
    targets = info.model_dump()["target_modules"]
    assert targets == [
        f"net.bert.encoder.layer.{i}.attention.self.{p}" for p in ("query", "value") for i in (0, 1)
    ]
    assert list((tmp_path / "cache" / "text").glob("*.npz")), "the tokenised dataset is cached"
    ev = evaluate_stage(tmp_path / "unlearned", ds, tmp_path / "split", tmp_path / "metrics.json")
    assert ev.regime == "sample"
    assert (ev.counts.retain, ev.counts.forget, ev.counts.test) == (len(split.retain), 4, len(split.test))
    # the pipeline's confusion matrix reads the model's tokens too
    from rfau.report import confusion

    conf, rows = confusion(tmp_path / "unlearned", ds, split)
    assert conf.classes == ["food", "sport", "tech"] and len(rows) == len(split.test)


def test_text_requests_are_validated_as_image_requests(text_file, tmp_path):
    ds = load_dataset(str(text_file))
    test_id = ds.split_ids("test")[0]
    cases = [("unknown", ["post-999"], "post-999"), ("test-id", [test_id], test_id)]
    for rid, ids, named in cases:
        with pytest.raises(RequestError, match=named):
            split_stage(ds, [request(tmp_path / f"{rid}.json", rid, sample_ids=ids)], tmp_path / rid)


def test_text_dataset_refuses_bad_records(tmp_path):
    def write(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return str(tmp_path / name)

    header = "id,text,label,split\n"
    with pytest.raises(DatasetError, match="'a' occurs twice"):
        load_dataset(write("dup.csv", header + "a,x,p,train\na,y,q,test\n"))
    with pytest.raises(DatasetError, match="id '../etc'"):
        load_dataset(write("path.csv", header + "../etc,x,p,train\nb,y,p,test\n"))
    with pytest.raises(DatasetError, match="split 'dev'"):
        load_dataset(write("split.csv", header + "a,x,p,train\nb,y,p,dev\n"))
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['label'\]"):
        load_dataset(write("cols.jsonl", '{"id": "a", "text": "x"}\n'))
    ds = load_dataset(write("ok.csv", header + "a,x y,p,train\nb,z,q,train\nc,w,p,test\n"))
    assert (ds.split_ids("test"), ds.classes, ds.split_rule) == (["c"], ("p", "q"), "column 'split'")


def test_text_dataset_from_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    records = {
        "id": ["a", "b", "c"],
        "text": ["x y", "z", "w"],
        "label": [1, 2, 1],
        "split": ["train", "train", "test"],
    }
    pd.DataFrame(records).to_parquet(tmp_path / "posts.parquet")
    ds = load_dataset(str(tmp_path / "posts.parquet"))
    assert (ds.ids, ds.classes, ds.y.tolist(), ds.split_ids("test")) == (
        ("a", "b", "c"),
        ("1", "2"),
        [0, 1, 0],
        ["c"],
    )


# --- import and the bootstrap champion ----------------------------------------------------------------


def test_model_import_registers_the_bootstrap_champion(cli, vit_dir, digits, tmp_path):
    from rfau.batch import BatchContext, ensure_base
    from rfau.tracking.settings import TrackingSettings

    r = cli(
        "model",
        "import",
        str(vit_dir),
        "--family",
        "hf-image",
        "-d",
        "digits",
        "--out",
        "mine",
        "--register",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    card = read_card(tmp_path / "mine")
    assert shown["weights_sha256"] == card.weights_sha256 and shown["registered"]["version"] == 1
    # the first batch starts from the imported model instead of training one
    base = ensure_base(
        digits, tmp_path / "base", BatchContext.open(settings=TrackingSettings(state_dir=tmp_path / ".rfau"))
    )
    assert (base.version, base.weights_sha256) == (1, card.weights_sha256)
    assert read_card(tmp_path / "base").family == "hf-image"


# --- refusals ------------------------------------------------------------------------------------------


def test_pickle_only_folders_and_files_are_refused(digits, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"never read")
    with pytest.raises(
        ModelError, match=r"pytorch_model.bin is a pickle.*save_pretrained\(DIR, safe_serialization=True\)"
    ):
        import_model(folder, "hf-image", digits, tmp_path / "out")
    (tmp_path / "resnet.pth").write_bytes(b"never read")
    with pytest.raises(ModelError, match=r"resnet.pth is a pickle.*safetensors.torch.save_file"):
        import_model(
            tmp_path / "resnet.pth", "torchvision", digits, tmp_path / "out", options={"arch": "resnet18"}
        )
    assert not (tmp_path / "out").exists()


def test_labels_that_do_not_match_the_dataset_are_refused(digits, tmp_path):
    default_labels = save_vit(tmp_path / "vit", None)  # transformers' LABEL_0..LABEL_9
    with pytest.raises(
        ModelError, match=r"labels \['LABEL_0', .*do not match the classes of dataset 'digits'"
    ):
        import_model(default_labels, "hf-image", digits, tmp_path / "out")


def test_unknown_target_modules_are_refused_and_suffixes_accepted(vit_dir, digits, tmp_path):
    from rfau.methods.rfau import RFAUConfig, resolve_modules

    import_model(vit_dir, "hf-image", digits, tmp_path / "model")
    model, _ = load_checkpoint(tmp_path / "model")
    with pytest.raises(ModelError, match="unknown LoRA target module 'attention.nope'"):
        resolve_modules(model, RFAUConfig(target_modules=["attention.nope"]))
    proj = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()} & {"query", "q_proj"}
    targets, taps = resolve_modules(
        model, RFAUConfig(target_modules=",".join(proj), taps=["net.vit.layernorm"])
    )
    assert len(targets) == 2 and taps == ["net.vit.layernorm", "net.classifier"]


def test_methods_a_family_cannot_run_say_why(vit_dir, digits, text_file, tmp_path):
    from rfau.models.families import check_method
    from rfau.stages import method_config

    with pytest.raises(ModelError, match="'retrain' cannot run on a hf-image model: retrain rebuilds"):
        check_method("hf-image", "retrain", None, digits)
    text = load_dataset(str(text_file))
    with pytest.raises(ModelError, match="augment_pad=0 --set augment_flip=false"):
        check_method("hf-text", "salun", method_config("salun", {}), text)
    check_method("hf-text", "salun", method_config("salun", {"augment_pad": 0, "augment_flip": False}), text)


# --- torchvision and timm (written against their documented APIs) ------------------------------------

NOT_HERE = (
    "{} is not usable here ({}): torchvision cannot import beside this machine's CPU torch 2.13.0 "
    "(PyPI's torchvision fails with 'operator torchvision::nms does not exist'; a matching torchvision "
    "needs a 5.5 GB CUDA torch 2.14.1), and timm needs torchvision"
)


def _require(library: str):
    try:
        return __import__(library)
    except Exception as e:  # ImportError, or a build for another torch failing at import
        pytest.skip(NOT_HERE.format(library, f"{type(e).__name__}: {e}"))


@pytest.mark.parametrize(("family", "arch"), [("torchvision", "resnet18"), ("timm", "resnet10t")])
def test_named_vision_model_through_unlearn(family, arch, digits, tmp_path):
    from safetensors.torch import save_file

    lib = _require(family)
    net = (
        lib.models.get_model(arch, weights=None, num_classes=10)
        if family == "torchvision"
        else lib.create_model(arch, pretrained=False, num_classes=10)
    )
    weights = tmp_path / "weights.safetensors"
    save_file(net.state_dict(), str(weights), metadata={"classes": json.dumps(list(digits.classes))})
    card = import_model(
        weights, family, digits, tmp_path / "model", options={"arch": arch, "image_size": [32, 32]}
    )
    assert card.family == family and card.preprocessing["num_channels"] == 3
    split_stage(digits, [request(tmp_path / "r.json", "r1", classes=["7"])], tmp_path / "split")
    info = unlearn_stage(
        tmp_path / "model", digits, tmp_path / "split", tmp_path / "unlearned", config=FAST_RFAU
    )
    assert info.model_dump()["taps"][-1].startswith("net.")
    ev = evaluate_stage(tmp_path / "unlearned", digits, tmp_path / "split", tmp_path / "metrics.json")
    assert ev.regime == "class"
