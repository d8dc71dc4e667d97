"""Datasets, deletion requests and the retain/forget/holdout split, through the public interfaces:
load_dataset, load_requests, resolve_forget_set, make_split, write_split, read_split, split_stage.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rfau.data.datasets import (
    FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    ImageDataset,
    find_fashion_mnist,
    load_dataset,
    load_fashion_mnist,
    read_idx,
)
from rfau.data.requests import DeletionRequest, load_requests, resolve_forget_set
from rfau.data.split import MANIFESTS, admit_requests, make_split, read_split, write_split
from rfau.errors import DatasetError, RequestError, RfauError
from rfau.io import OUTPUT_MARKER
from rfau.stages import split_stage

# Loaded once: hypothesis tests cannot use function-scoped fixtures, and a load takes ~0.1 s.
DIGITS = load_dataset("digits")
TRAIN_IDS = DIGITS.split_ids("train")
TRAIN_SET = frozenset(TRAIN_IDS)
TEST_IDS = DIGITS.split_ids("test")
TRAIN_BY_CLASS = {c: [s for s in TRAIN_IDS if DIGITS.class_of(s) == c] for c in DIGITS.classes}
RECEIVED = "2024-05-01T12:00:00+00:00"


def request(request_id: str = "req-1", **fields) -> dict:
    """A valid request object; ``fields`` override or add keys (value None removes the key)."""
    obj = {
        "request_id": request_id,
        "sample_ids": ["digits/1"],
        "classes": [],
        "reason": "user asked for erasure",
        "received_at": RECEIVED,
    }
    obj.update(fields)
    return {k: v for k, v in obj.items() if v is not None}


def write_json(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def make_request(request_id: str, sample_ids=(), classes=()) -> tuple[str, DeletionRequest]:
    req = DeletionRequest.model_validate(
        request(request_id, sample_ids=list(sample_ids), classes=list(classes))
    )
    return f"{request_id}.json", req


# ---------------------------------------------------------------------------------------------
# 1. datasets and sample ids
# ---------------------------------------------------------------------------------------------


def test_digits_ids_are_index_based_unique_and_stable():
    again = load_dataset("digits")
    assert DIGITS.ids == again.ids
    assert DIGITS.ids == tuple(f"digits/{i}" for i in range(len(DIGITS.ids)))
    assert len(set(DIGITS.ids)) == len(DIGITS.ids) == DIGITS.x.shape[0] == DIGITS.y.shape[0]
    assert DIGITS.kind == "digits" and DIGITS.classes == tuple(str(c) for c in range(10))


def test_digits_test_split_is_every_fifth_index():
    assert TEST_IDS == [f"digits/{i}" for i in range(len(DIGITS.ids)) if i % 5 == 0]
    assert TRAIN_IDS == [f"digits/{i}" for i in range(len(DIGITS.ids)) if i % 5 != 0]
    assert DIGITS.is_test.tolist() == [i % 5 == 0 for i in range(len(DIGITS.ids))]


IMAGEFOLDER_FILES = {  # relative path -> colour; PNG and JPEG mixed on purpose
    "train/cat/a.png": (10, 20, 30),
    "train/cat/b.jpg": (40, 50, 60),
    "train/dog/c.png": (70, 80, 90),
    "train/dog/d.jpeg": (100, 110, 120),
    "test/cat/e.png": (130, 140, 150),
    "test/dog/f.jpg": (160, 170, 180),
}


def build_imagefolder(root: Path, files: dict[str, tuple[int, int, int]]) -> Path:
    for rel, colour in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), colour).save(p)
    return root


@pytest.fixture
def imagefolder(tmp_path) -> Path:
    return build_imagefolder(tmp_path / "imgs", IMAGEFOLDER_FILES)


def test_imagefolder_dir_ids_are_relative_paths(imagefolder):
    ds = load_dataset(str(imagefolder))
    assert ds.ids == tuple(sorted(IMAGEFOLDER_FILES))
    assert ds.kind == "imagefolder" and ds.classes == ("cat", "dog")
    assert tuple(ds.x.shape) == (len(IMAGEFOLDER_FILES), 3, 4, 4)
    assert ds.split_ids("test") == ["test/cat/e.png", "test/dog/f.jpg"]
    assert all(ds.class_of(sid) == sid.split("/")[1] for sid in ds.ids)
    assert load_dataset(str(imagefolder)).ids == ds.ids  # stable


@pytest.mark.parametrize("top", ["", "cifar-mini"], ids=["flat", "wrapped"])
def test_imagefolder_archive_gives_same_ids_as_directory(imagefolder, tmp_path, top):
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for rel in IMAGEFOLDER_FILES:
            tar.add(imagefolder / rel, arcname=f"{top}/{rel}" if top else rel)
    cache = tmp_path / "cache"
    from_dir = load_dataset(str(imagefolder))
    first = load_dataset(str(archive), cache_dir=cache)
    assert first.ids == from_dir.ids == tuple(sorted(IMAGEFOLDER_FILES))
    assert first.classes == from_dir.classes
    assert first.y.tolist() == from_dir.y.tolist()
    assert first.is_test.tolist() == from_dir.is_test.tolist()
    assert len(list(cache.glob("*.npz"))) == 1
    cached = load_dataset(str(archive), cache_dir=cache)  # second load comes from the .npz cache
    assert cached.ids == first.ids and cached.classes == first.classes
    assert cached.x.equal(first.x) and cached.y.equal(first.y)


def test_imagefolder_archive_in_s3_loads_like_the_local_one(imagefolder, tmp_path, s3_server, monkeypatch):
    from tests.support.services import S3_ENV

    for k, v in {**S3_ENV, "AWS_ENDPOINT_URL": s3_server["endpoint"]}.items():
        monkeypatch.setenv(k, v)
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for rel in IMAGEFOLDER_FILES:
            tar.add(imagefolder / rel, arcname=rel)
    s3_server["client"].put_object(
        Bucket=s3_server["bucket"], Key="datasets/imgs.tar.gz", Body=archive.read_bytes()
    )
    ds = load_dataset(f"s3://{s3_server['bucket']}/datasets/imgs.tar.gz", cache_dir=tmp_path / "cache")
    assert ds.ids == load_dataset(str(imagefolder)).ids
    with pytest.raises(DatasetError, match="archive"):
        load_dataset(f"s3://{s3_server['bucket']}/datasets/imgs.zip")


# --- Fashion-MNIST (idx files) ----------------------------------------------------------------


def idx_bytes(data: np.ndarray) -> bytes:
    """LeCun's idx format for unsigned bytes: 0, 0, type 0x08, rank, big-endian dims, data."""
    header = bytes([0, 0, 0x08, data.ndim]) + np.asarray(data.shape, ">u4").tobytes()
    return header + data.astype(np.uint8).tobytes()


def write_fashion_folder(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> Path:
    """A miniature Fashion-MNIST folder: the four idx files, 28x28 images, labels cycling 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        parts = {
            "images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            "labels-idx1-ubyte": np.arange(n, dtype=np.uint8) % 10,
        }
        for part, data in parts.items():
            raw = idx_bytes(data)
            path = folder / f"{prefix}-{part}{'.gz' if gz else ''}"
            path.write_bytes(gzip.compress(raw) if gz else raw)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_a_generated_idx_folder_loads_by_its_path(tmp_path, gz):
    folder = write_fashion_folder(tmp_path / "fm", gz=gz)
    ds = load_dataset(str(folder))
    assert ds.name == FASHION_MNIST and ds.kind == "idx" and ds.classes == FASHION_MNIST_CLASSES
    assert ds.ids == tuple([f"train/{i}" for i in range(20)] + [f"test/{i}" for i in range(10)])
    assert ds.x.shape == (30, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.y.tolist() == [i % 10 for i in range(20)] + [i % 10 for i in range(10)]
    assert ds.is_test.sum() == 10 and not ds.is_test[:20].any()
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes()) if gz else None
    first = raw[16 : 16 + 784] if raw else (folder / "train-images-idx3-ubyte").read_bytes()[16 : 16 + 784]
    assert ds.x[0, 0].flatten().tolist() == list(first)  # pixel order as in the file


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00\x0d\x01\x00\x00\x00\x02ab", "bad magic"),  # type 0x0d: float data
        (b"\x01\x00\x08\x01\x00\x00\x00\x02ab", "bad magic"),  # first bytes not zero
        (b"\x00\x00", "bad magic"),  # shorter than the magic number
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated"),  # rank 3 with one dimension
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "3 data bytes where dims"),  # 5 promised, 3 given
        (b"\x00\x00\x08\x01\x00\x00\x00\x01abc", "3 data bytes where dims"),  # trailing bytes
    ],
)
def test_read_idx_refuses_a_bad_file(tmp_path, content, message):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        read_idx(path)


def test_read_idx_refuses_a_gz_file_that_is_not_gzip(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)))  # plain idx under a .gz name
    with pytest.raises(DatasetError, match="cannot read idx file"):
        read_idx(path)


def test_idx_folder_with_mismatched_or_bad_labels_is_refused(tmp_path):
    folder = write_fashion_folder(tmp_path / "fm", gz=False)
    labels = folder / "t10k-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(9, np.uint8)))  # 10 test images, 9 labels
    with pytest.raises(DatasetError, match="do not match"):
        load_dataset(str(folder))
    labels.write_bytes(idx_bytes(np.full(10, 10, np.uint8)))  # label 10 of 0..9
    with pytest.raises(DatasetError, match="label 10"):
        load_dataset(str(folder))


def test_fashion_mnist_env_pointing_nowhere_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(DatasetError, match=FASHION_MNIST_ENV):
        load_dataset(FASHION_MNIST)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(write_fashion_folder(tmp_path / "fm")))
    assert len(load_dataset(FASHION_MNIST).ids) == 30


@pytest.fixture(scope="module")
def fashion_mnist() -> ImageDataset:
    """The real dataset (Debian's dataset-fashion-mnist or $RFAU_FASHION_MNIST); skipped without."""
    try:
        return load_fashion_mnist(find_fashion_mnist())
    except DatasetError as e:
        pytest.skip(f"Fashion-MNIST is not installed here ({e}); `make fashion-mnist` installs it")


def test_fashion_mnist_has_the_published_splits_and_classes(fashion_mnist):
    ds = fashion_mnist
    assert ds.ids[:2] == ("train/0", "train/1") and ds.ids[60_000] == "test/0" and ds.ids[-1] == "test/9999"
    assert len(set(ds.ids)) == len(ds.ids) == 70_000
    assert ds.x.shape == (70_000, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert int(ds.is_test.sum()) == 10_000 and not ds.is_test[:60_000].any()
    assert ds.classes == FASHION_MNIST_CLASSES and len(ds.classes) == 10
    # balanced: 6,000 training and 1,000 test images per class
    assert torch.bincount(ds.y[:60_000]).tolist() == [6000] * 10
    assert torch.bincount(ds.y[60_000:]).tolist() == [1000] * 10


def test_fashion_mnist_by_path_is_the_named_dataset(fashion_mnist):
    by_path = load_dataset(str(find_fashion_mnist()))
    assert by_path.ids == fashion_mnist.ids and by_path.name == fashion_mnist.name == FASHION_MNIST
    assert torch.equal(by_path.x, fashion_mnist.x) and torch.equal(by_path.y, fashion_mnist.y)
    assert by_path.class_of("test/0") == fashion_mnist.classes[int(fashion_mnist.y[60_000])]


def test_missing_dataset_path_raises_dataset_error(tmp_path):
    missing = tmp_path / "no-such-dataset"
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(str(missing))
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(str(missing) + ".tar.gz", cache_dir=tmp_path)


def test_test_classes_without_training_images_raise_dataset_error(tmp_path):
    root = build_imagefolder(
        tmp_path / "imgs",
        {
            "train/cat/a.png": (1, 1, 1),
            "test/cat/b.png": (2, 2, 2),
            "test/bird/c.png": (3, 3, 3),
        },
    )
    with pytest.raises(DatasetError, match="bird"):
        load_dataset(str(root))


def test_archive_with_dot_slash_wrapping_folder(imagefolder, tmp_path):
    # `tar czf x.tar.gz ./cifar-mini` stores members as ./cifar-mini/train/...
    archive = tmp_path / "dot.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for rel in IMAGEFOLDER_FILES:
            tar.add(imagefolder / rel, arcname=f"./cifar-mini/{rel}")
    assert load_dataset(str(archive), cache_dir=tmp_path).ids == tuple(sorted(IMAGEFOLDER_FILES))


# ---------------------------------------------------------------------------------------------
# 2. deletion requests
# ---------------------------------------------------------------------------------------------


def test_load_requests_reads_files_lists_and_directories_in_name_order(tmp_path):
    d = tmp_path / "reqs"
    d.mkdir()
    write_json(d / "b.json", request("req-b"))
    write_json(d / "a.json", [request("req-a1"), request("req-a2", sample_ids=["digits/2"])])
    (d / "notes.txt").write_text("ignored")
    single = write_json(tmp_path / "c.json", request("req-c", sample_ids=[], classes=["3"]))
    loaded = load_requests([d, single])
    assert [r.request_id for _, r in loaded] == ["req-a1", "req-a2", "req-b", "req-c"]
    assert [src for src, _ in loaded] == [
        f"{d / 'a.json'}[0]",
        f"{d / 'a.json'}[1]",
        str(d / "b.json"),
        str(single),
    ]
    forget, classes = resolve_forget_set(loaded, DIGITS)
    assert forget == sorted({"digits/1", "digits/2", *TRAIN_BY_CLASS["3"]})
    assert classes == ["3"]


# Each case: (files to write: name -> JSON object or raw text, substrings the message must contain).
# "{dir}" in an expected substring is replaced by the request folder.
BAD_REQUESTS = [
    pytest.param(
        {"r.json": '{"request_id": "req-x", '}, ["{dir}/r.json", "malformed JSON"], id="malformed-json"
    ),
    pytest.param(
        {"r.json": request("req-x", reason=None)}, ["req-x", "reason", "required"], id="missing-reason"
    ),
    pytest.param(
        {"r.json": request("req-x", received_at=None)},
        ["req-x", "received_at", "required"],
        id="missing-received_at",
    ),
    pytest.param(
        {"r.json": request(None)}, ["{dir}/r.json", "request_id", "required"], id="missing-request_id"
    ),
    pytest.param(
        {"r.json": request("req-x", priority="high")}, ["req-x", "priority", "xtra"], id="extra-field"
    ),
    pytest.param(
        {"r.json": request("req-x", received_at="yesterday")}, ["req-x", "received_at"], id="bad-datetime"
    ),
    pytest.param(
        {"r.json": [request("req-ok"), "not an object"]},
        ["{dir}/r.json[1]", "JSON object"],
        id="non-object-in-list",
    ),
    pytest.param(
        {"r.json": request("req-x", sample_ids=["digits/1", "digits/99999"])},
        ["req-x", "unknown sample ids", "digits/99999"],
        id="unknown-id",
    ),
    pytest.param(
        {"r.json": request("req-x", sample_ids=["digits/1", "digits/5"])},
        ["req-x", "test split", "digits/5"],
        id="test-split-id",
    ),
    pytest.param(
        {"r.json": request("req-x", sample_ids=["digits/1", "digits/2", "digits/1"])},
        ["req-x", "duplicate sample ids", "digits/1"],
        id="duplicate-id",
    ),
    pytest.param(
        {"r.json": request("req-x", sample_ids=[], classes=["3", "3"])},
        ["req-x", "duplicate class"],
        id="duplicate-class",
    ),
    pytest.param(
        {"r.json": request("req-x", sample_ids=[], classes=["3", "cat"])},
        ["req-x", "unknown classes", "cat"],
        id="unknown-class",
    ),
    pytest.param(
        {"r.json": request("req-x", sample_ids=[], classes=[])},
        ["req-x", "empty request"],
        id="empty-request",
    ),
    pytest.param(
        {
            "a.json": request("req-a", sample_ids=[], classes=[str(c) for c in range(5)]),
            "b.json": request("req-b", sample_ids=[], classes=[str(c) for c in range(5, 10)]),
        },
        ["req-a", "req-b", "every training sample"],
        id="removes-everything",
    ),
    *[
        pytest.param(
            {"r.json": request("req-x", sample_ids=["digits/1", sid])},
            ["req-x", "rejected", why],
            id=f"path-trick-{name}",
        )
        for name, sid, why in [
            ("dotdot", "../x", ".."),
            ("dotdot-inner", "digits/../digits/1", ".."),
            ("absolute", "/abs", "absolute"),
            ("dot", "a/./b", "'.'"),
            ("backslash", "digits\\1", "backslash"),
            ("drive", "C:foo", "absolute"),
            ("empty-segment", "digits//1", "empty"),
            ("empty", "", "empty"),
        ]
    ],
    pytest.param(
        {"a.json": request("req-dup"), "b.json": request("req-dup", sample_ids=["digits/2"])},
        ["{dir}/b.json", "req-dup", "already used", "{dir}/a.json"],
        id="duplicate-request-id",
    ),
    pytest.param(
        {"a.json": request("req-ok"), "b.json": request("req-bad", sample_ids=["digits/0"])},
        ["req-bad", "{dir}/b.json", "test split"],
        id="bad-second-file",
    ),
]


@pytest.mark.parametrize(("files", "expected"), BAD_REQUESTS)
def test_bad_request_raises_request_error_and_split_stage_writes_nothing(tmp_path, files, expected):
    req_dir = tmp_path / "requests"
    req_dir.mkdir()
    for name, obj in files.items():
        write_json(req_dir / name, obj)
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    out = out_parent / "split"
    with pytest.raises(RequestError) as info:
        split_stage(DIGITS, [req_dir], out)
    message = str(info.value)
    for part in expected:
        assert part.replace("{dir}", str(req_dir)) in message, message
    assert not out.exists()
    assert list(out_parent.iterdir()) == []  # no hidden temp folders either
    # the same error comes from the lower-level API
    with pytest.raises(RequestError):
        make_split(DIGITS, load_requests([req_dir]))


def test_nonexistent_request_path_raises_and_writes_nothing(tmp_path):
    missing = tmp_path / "nowhere.json"
    out = tmp_path / "out" / "split"
    with pytest.raises(RequestError, match="no such request file") as info:
        split_stage(DIGITS, [missing], out)
    assert str(missing) in str(info.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_empty_request_folder_raises(tmp_path):
    with pytest.raises(RequestError, match="no deletion requests"):
        load_requests([tmp_path])


def test_failed_split_stage_keeps_previous_output(tmp_path):
    good = write_json(tmp_path / "good.json", request("req-good"))
    bad = write_json(tmp_path / "bad.json", request("req-bad", sample_ids=["digits/99999"]))
    out = tmp_path / "out" / "split"
    split_stage(DIGITS, [good], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RequestError, match="req-bad"):
        split_stage(DIGITS, [bad], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["split"]


# ---------------------------------------------------------------------------------------------
# 3. split invariants
# ---------------------------------------------------------------------------------------------

BASE = make_split(DIGITS, [], 0.1)  # no requests: the fixed holdout slice


@st.composite
def request_strategy(draw) -> tuple[list[str], list[str]]:
    """(sample_ids, classes): random training ids, plus sometimes every id of a class named one
    by one (which forgets that class as a whole too), and random whole classes."""
    ids = draw(st.lists(st.sampled_from(TRAIN_IDS), unique=True, max_size=40))
    for c in draw(st.lists(st.sampled_from(DIGITS.classes), unique=True, max_size=2)):
        ids += [s for s in TRAIN_BY_CLASS[c] if s not in ids]
    classes = draw(st.lists(st.sampled_from(DIGITS.classes), unique=True, max_size=10))
    return draw(st.permutations(ids)), classes


@settings(max_examples=30, deadline=None)
@given(reqs=st.lists(request_strategy(), min_size=1, max_size=3), rnd=st.randoms(use_true_random=False))
def test_split_invariants(reqs, rnd):
    requests = [make_request(f"req-{i}", ids, classes) for i, (ids, classes) in enumerate(reqs)]
    expected_forget = set()
    for ids, classes in reqs:
        expected_forget.update(ids)
        for c in classes:
            expected_forget.update(TRAIN_BY_CLASS[c])

    if any(not ids and not classes for ids, classes in reqs):
        with pytest.raises(RequestError, match="empty request"):
            make_split(DIGITS, requests, 0.1)
        return
    if expected_forget >= TRAIN_SET:
        with pytest.raises(RequestError, match="every training sample"):
            make_split(DIGITS, requests, 0.1)
        return
    if TRAIN_SET - expected_forget <= set(BASE.holdout):
        with pytest.raises(RfauError):
            make_split(DIGITS, requests, 0.1)
        return

    split = make_split(DIGITS, requests, 0.1)
    retain, forget, holdout = set(split.retain), set(split.forget), set(split.holdout)
    assert len(retain) == len(split.retain) and len(forget) == len(split.forget)
    assert len(holdout) == len(split.holdout)
    assert not retain & forget and not retain & holdout and not forget & holdout
    assert retain | forget | holdout == TRAIN_SET
    assert split.test == TEST_IDS
    assert forget == expected_forget
    assert split.forget == sorted(split.forget)
    # holdout depends only on the id: a base holdout id stays holdout or becomes forget
    assert holdout == set(BASE.holdout) - forget
    assert retain == set(BASE.retain) - forget
    assert split.forget_classes == sorted(c for c, ids in TRAIN_BY_CLASS.items() if forget.issuperset(ids))
    assert split.request_ids == [f"req-{i}" for i in range(len(reqs))]
    # forget_hash is order-independent: of the forget list and of the order of the requests
    shuffled = list(split.forget)
    rnd.shuffle(shuffled)
    assert dataclasses.replace(split, forget=shuffled).forget_hash == split.forget_hash
    rev = make_split(DIGITS, list(reversed(requests)), 0.1)
    assert rev.forget == split.forget and rev.forget_hash == split.forget_hash


def test_class_named_id_by_id_counts_as_forgotten_class():
    split = make_split(DIGITS, [make_request("r", TRAIN_BY_CLASS["3"] + ["digits/1"])])
    assert split.forget_classes == ["3"]
    assert set(split.forget) == {*TRAIN_BY_CLASS["3"], "digits/1"}


def test_forget_hash_changes_with_content():
    a = make_split(DIGITS, [make_request("r", ["digits/1"])])
    b = make_split(DIGITS, [make_request("r", ["digits/2"])])
    assert a.forget_hash != b.forget_hash != BASE.forget_hash


def test_bad_holdout_fraction_raises():
    with pytest.raises(RfauError, match="holdout_fraction"):
        make_split(DIGITS, [], 0.5)


# ---------------------------------------------------------------------------------------------
# 4. write_split / read_split
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def written_split(tmp_path):
    split = make_split(DIGITS, [make_request("req-1", ["digits/1", "digits/2"], ["7"])], 0.1)
    return split, write_split(split, tmp_path / "split")


def test_write_read_split_round_trip(written_split):
    split, out = written_split
    assert sorted(p.name for p in out.iterdir() if p.name != OUTPUT_MARKER) == sorted(
        [*(f"{m}.txt" for m in (*MANIFESTS, "excluded")), "split.json"]
    )
    back = read_split(out)
    assert back == split
    assert back.forget_classes == ["7"] and back.request_ids == ["req-1"]
    meta = json.loads((out / "split.json").read_text())
    assert meta["forget_sha256"] == split.forget_hash
    assert meta["counts"] == {m: len(getattr(split, m)) for m in (*MANIFESTS, "excluded")}


def test_split_stage_writes_the_same_split(tmp_path):
    f = write_json(tmp_path / "r.json", request("req-1", sample_ids=["digits/1"], classes=["4"]))
    split = split_stage(DIGITS, [f], tmp_path / "split")
    assert read_split(tmp_path / "split") == split
    assert split == make_split(DIGITS, load_requests([f]))


@pytest.mark.parametrize("edit", ["drop-line", "add-line", "swap-id"])
def test_editing_forget_txt_is_detected(written_split, edit):
    _, out = written_split
    path = out / "forget.txt"
    lines = path.read_text().splitlines()
    if edit == "drop-line":
        lines = lines[1:]
    elif edit == "add-line":
        lines.append("digits/3")
    else:
        lines[0] = "digits/3"
    path.write_text("".join(f"{s}\n" for s in lines))
    with pytest.raises(RfauError, match="edited"):
        read_split(out)


def test_read_split_of_a_non_split_folder_raises(tmp_path):
    with pytest.raises(RfauError, match="split.json"):
        read_split(tmp_path)


def test_round_trip_with_spaces_in_ids(tmp_path):
    root = build_imagefolder(
        tmp_path / "imgs",
        {
            "train/cat/my photo.png": (1, 1, 1),
            "train/cat/b.png": (2, 2, 2),
            "train/dog/c.png": (3, 3, 3),
            "test/cat/d.png": (4, 4, 4),
        },
    )
    ds = load_dataset(str(root))
    split = make_split(ds, [make_request("r", ["train/cat/my photo.png"])], 0.0)
    assert read_split(write_split(split, tmp_path / "split")) == split


def test_admit_requests_takes_largest_prefix_and_rejects_invalid():
    classes = list(DIGITS.classes)
    low = make_request("low", classes=classes[:5])
    high = make_request("high", classes=classes[5:])
    bad = make_request("bad", sample_ids=["digits/no-such"])
    one = make_request("one", sample_ids=["digits/1"])
    adm = admit_requests(DIGITS, [low, high, bad, one], 0.1)
    assert [r.request_id for _, r in adm.admitted] == ["low", "one"]
    assert [(r.request_id, "remove every training sample" in why) for _, r, why in adm.deferred] == [
        ("high", True)
    ]
    assert [r.request_id for _, r, _ in adm.rejected] == ["bad"]
    make_split(DIGITS, adm.admitted, 0.1)  # what was admitted splits


def test_each_bench_seed_draws_its_own_holdout_and_a_model_refuses_another_draw(tmp_path):
    from rfau.bench import holdout_salt, scenario_request
    from rfau.data.split import HOLDOUT_SALT, training_record
    from rfau.errors import ModelError
    from rfau.models.checkpoint import ModelCard
    from rfau.stages import check_compatible

    ds = DIGITS
    s0, s1 = (make_split(ds, [], 0.1, holdout_salt=holdout_salt(seed)) for seed in (0, 1))
    assert s0.holdout_salt == HOLDOUT_SALT  # seed 0 keeps the pipeline's own slice
    assert set(s0.holdout) != set(s1.holdout)
    assert abs(len(s1.holdout) - len(s0.holdout)) < 0.05 * len(ds.split_ids("train"))
    write_split(s1, tmp_path / "split")
    assert read_split(tmp_path / "split").holdout_salt == holdout_salt(1)
    # seed 1's random request draws only what seed 1's original trained on
    req = json.loads(
        scenario_request(ds, "random", tmp_path / "req", 1, tmp_path / "unused", s1.holdout_salt).read_text()
    )
    assert req["sample_ids"] and not set(req["sample_ids"]) & set(s1.holdout)
    # a model trained beside one draw is refused for a split of another: it saw that calibration data
    card = ModelCard(
        architecture="small_cnn",
        classes=list(ds.classes),
        input_shape=list(ds.input_shape),
        dataset=ds.name,
        weights_sha256="1" * 64,
        **training_record(s0, {}, {"ra": 0.0, "ta": 0.0}, "original"),
    )
    check_compatible(card, ds, s0)
    with pytest.raises(ModelError, match="salt"):
        check_compatible(card, ds, s1)
