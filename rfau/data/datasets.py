"""Image datasets held in memory as one uint8 tensor, with a stable string id per sample.

Supported sources:
- ``digits``: scikit-learn's handwritten digits (ships with scikit-learn, no download).
  Ids are ``digits/<index>``; every fifth sample (index % 5 == 0) is the test split.
- ``fashion-mnist``: Zalando's Fashion-MNIST from its original idx files (gzipped or not), found
  in $RFAU_FASHION_MNIST or Debian's ``dataset-fashion-mnist`` folder; any folder holding the four
  idx files also loads by its path. Ids are ``train/<index>`` and ``test/<index>``.
- an ImageFolder directory ``<root>/{train,test}/<class>/<file>`` or a ``.tar``/``.tar.gz``
  archive of one (e.g. ../shared/datasets/cifar10). Ids are the paths inside the folder or
  archive, e.g. ``train/cat/0001.jpg``. Decoded archives are cached as ``.npz``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np
import torch

from rfau.data.base import Dataset
from rfau.data.base import subset_dataset as subset_dataset  # re-exported: the bench imports it here
from rfau.data.sources import is_fortunes_source, is_saved_dataset, is_text_source
from rfau.errors import DatasetError
from rfau.storage import open_store

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageDataset(Dataset):
    """Images: ``x`` is uint8 [N, C, H, W]."""


# the kinds of data other than images, by source name: (accepts, "module:loader"), imported only
# when such a source is loaded (text needs neither torch's image code nor these modules otherwise)
OTHER_SOURCES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (is_fortunes_source, "rfau.data.fortunes:load_fortunes_source"),
    (is_saved_dataset, "rfau.data.saved:load_saved_dataset"),
    (is_text_source, "rfau.data.text:load_text_dataset"),
)


def _other_loader(source: str) -> Callable[[str], Dataset] | None:
    for accepts, target in OTHER_SOURCES:
        if accepts(source):
            module, _, name = target.partition(":")
            return getattr(import_module(module), name)
    return None


def load_dataset(source: str, cache_dir: str | Path | None = None) -> Dataset:
    """Load ``digits`` or an ImageFolder directory/archive. Raises DatasetError with the reason."""
    if source == "digits":
        return _load_digits()
    load = _other_loader(source)  # other kinds of data, e.g. text records (rfau.data.text)
    if load is not None:
        return load(source)
    if source == FASHION_MNIST:
        return load_fashion_mnist(find_fashion_mnist())
    if source.startswith("s3://"):  # an archive in the object store (cluster pods share no disk)
        return load_dataset(
            str(_fetch_s3(source, Path(cache_dir) if cache_dir else _default_cache())), cache_dir
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(
            f"dataset {source!r} not found: give 'digits' or the path of an ImageFolder "
            "directory or .tar/.tar.gz archive (or s3://bucket/key.tar.gz)"
        )
    if path.is_dir() and is_idx_folder(path):
        return load_fashion_mnist(path)
    if path.is_dir():
        return _load_imagefolder_dir(path)
    if path.name.endswith((".tar", ".tar.gz", ".tgz")):
        return _load_imagefolder_archive(path, Path(cache_dir) if cache_dir else _default_cache())
    raise DatasetError(f"dataset {source!r} is neither a directory nor a .tar/.tar.gz archive")


# --- Fashion-MNIST (idx files) -------------------------------------------------------------------

FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_ENV = "RFAU_FASHION_MNIST"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
# label 0..9 as in the dataset's README, spelled as safe ids (they name files and request ids)
FASHION_MNIST_CLASSES = (
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
_IDX_FILES = {  # (split, part) -> file name without .gz
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_MISSING_FASHION = (
    "install Debian's package (apt-get install dataset-fashion-mnist; `make fashion-mnist` does it "
    f"as root), pass --data FOLDER or set {FASHION_MNIST_ENV} to a folder holding "
    "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and "
    "t10k-labels-idx1-ubyte[.gz]"
)


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def is_idx_folder(folder: Path) -> bool:
    """True if the folder holds the four Fashion-MNIST idx files (gzipped or not)."""
    return all(_idx_file(folder, name) for name in _IDX_FILES.values())


def find_fashion_mnist(given: str | Path | None = None) -> Path:
    """The Fashion-MNIST folder: ``given`` (--data), else $RFAU_FASHION_MNIST, else Debian's
    package folder. Raises DatasetError saying how to get it."""
    source = "--data" if given else FASHION_MNIST_ENV
    given = given or os.environ.get(FASHION_MNIST_ENV)
    if given:
        folder = Path(given).expanduser()
        if not folder.is_dir() or not is_idx_folder(folder):
            raise DatasetError(
                f"Fashion-MNIST not found at {str(given)!r} (from {source}): {_MISSING_FASHION}"
            )
        return folder
    if is_idx_folder(FASHION_MNIST_DEBIAN):
        return FASHION_MNIST_DEBIAN
    raise DatasetError(f"Fashion-MNIST not found: {_MISSING_FASHION}")


def read_idx(path: Path) -> np.ndarray:
    """One idx file (LeCun's format: 2 zero bytes, a type code, the rank, big-endian int32 dims,
    then the data); only unsigned-byte data, as in (Fashion-)MNIST."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"cannot read idx file {path.name!r}: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DatasetError(f"{path.name!r} is not an unsigned-byte idx file (bad magic number)")
    rank = raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DatasetError(f"{path.name!r}: idx header is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=rank, offset=4))
    if len(raw) - header != int(np.prod(dims)):
        raise DatasetError(
            f"{path.name!r}: {len(raw) - header} data bytes where dims {dims} need {np.prod(dims)}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _read_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(_idx_file(folder, _IDX_FILES[(split, "images")]))  # type: ignore[arg-type]
    labels = read_idx(_idx_file(folder, _IDX_FILES[(split, "labels")]))  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(
            f"Fashion-MNIST {split}: images {images.shape} and labels {labels.shape} do not match "
            "(expected [N, H, W] and [N])"
        )
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DatasetError(f"Fashion-MNIST {split}: label {int(labels.max())} is not one of 0..9")
    return images, labels


def load_fashion_mnist(folder: str | Path) -> ImageDataset:
    """Fashion-MNIST from a folder of its idx files: 60,000 training and 10,000 test images,
    28x28 grey, ids ``train/<index>`` and ``test/<index>`` (the index in the idx file)."""
    folder = Path(folder)
    if not is_idx_folder(folder):
        raise DatasetError(f"Fashion-MNIST not found in {str(folder)!r}: {_MISSING_FASHION}")
    (x_tr, y_tr), (x_te, y_te) = (_read_idx_split(folder, s) for s in SPLITS)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DatasetError(
            f"Fashion-MNIST: train images {x_tr.shape[1:]} and test images {x_te.shape[1:]} differ"
        )
    ids = [f"train/{i}" for i in range(len(y_tr))] + [f"test/{i}" for i in range(len(y_te))]
    return ImageDataset(
        name=FASHION_MNIST,
        ids=tuple(ids),
        x=torch.from_numpy(np.concatenate([x_tr, x_te])[:, None]).contiguous(),
        y=torch.from_numpy(np.concatenate([y_tr, y_te]).astype(np.int64)),
        is_test=torch.cat(
            [torch.zeros(len(y_tr), dtype=torch.bool), torch.ones(len(y_te), dtype=torch.bool)]
        ),
        classes=FASHION_MNIST_CLASSES,
        kind="idx",
    )


def _fetch_s3(uri: str, cache: Path) -> Path:
    """Download s3://bucket/key.tar.gz into the cache, named by its content hash (the archive's
    decoded-tensor cache then applies as for a local archive)."""
    import hashlib

    bucket_key = uri[len("s3://") :]
    parent, _, name = bucket_key.rpartition("/")
    if not parent or not name.endswith((".tar", ".tar.gz", ".tgz")):
        raise DatasetError(f"dataset {uri!r}: an S3 dataset must be a .tar/.tar.gz ImageFolder archive")
    data = open_store(f"s3://{parent}").get_bytes(name)
    target = cache / "s3" / hashlib.sha256(data).hexdigest()[:16] / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return target


def _default_cache() -> Path:
    return Path(os.environ.get("RFAU_CACHE_DIR", Path.home() / ".cache" / "rfau"))


def _digits_csv() -> Path:
    """scikit-learn's copy of the UCI digits (``sklearn/datasets/data/digits.csv.gz``), found without
    importing scikit-learn: ``sklearn.datasets`` pulls in scipy and pandas (about 2 s), paid by every
    pipeline task and CLI process that loads the demo data but never evaluates."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the digits data ships with scikit-learn, which is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DatasetError(f"the digits data is missing from scikit-learn's install: {path}")
    return path


def _load_digits() -> ImageDataset:
    # the layout sklearn.datasets.load_digits reads: 64 pixel values (0..16) and the label per row
    data = np.loadtxt(_digits_csv(), delimiter=",")
    images = np.rint(data[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)  # -> 0..255
    n = len(images)
    return ImageDataset(
        name="digits",
        ids=tuple(f"digits/{i}" for i in range(n)),
        x=torch.from_numpy(images).unsqueeze(1).contiguous(),
        y=torch.from_numpy(data[:, -1].astype(np.int64)),
        is_test=torch.tensor([i % 5 == 0 for i in range(n)]),
        classes=tuple(str(c) for c in range(10)),
        kind="digits",
    )


def _parse_member(rel: str) -> tuple[str, str] | None:
    """``train/cat/0001.jpg`` -> (split, class); None for anything that is not such an image."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts[:-1]) and parts[0] in SPLITS:
        # train/../x.png would otherwise become a sample of a class named '..'
        raise DatasetError(f"dataset member {rel!r} has an empty, '.' or '..' path part; refusing it")
    if len(parts) != 3 or parts[0] not in SPLITS or not parts[2].lower().endswith(IMAGE_SUFFIXES):
        return None
    return parts[0], parts[1]


def _assemble(name: str, entries: list[tuple[str, str, str, bytes]]) -> ImageDataset:
    """entries: (id, split, class, encoded image bytes), decoded with PIL."""
    from PIL import Image

    if not entries:
        raise DatasetError(f"dataset {name!r} holds no images under train/<class>/ or test/<class>/")
    classes = sorted({c for _, s, c, _ in entries if s == "train"})
    unknown = sorted({c for _, s, c, _ in entries if s == "test"} - set(classes))
    if unknown:
        raise DatasetError(f"dataset {name!r}: test classes {unknown} have no training images")
    if not any(s == "test" for _, s, _, _ in entries):
        raise DatasetError(f"dataset {name!r} has no test/<class>/ images")
    entries.sort(key=lambda e: e[0])
    arrays: list = []
    mode = None
    for sid, _, _, data in entries:
        try:
            with Image.open(io.BytesIO(data)) as im:
                mode = mode or ("L" if im.mode in ("L", "1", "I;16") else "RGB")
                arr = np.asarray(im.convert(mode))
        except Exception as e:  # PIL raises many types for corrupt files
            raise DatasetError(f"dataset {name!r}: cannot decode image {sid!r}: {e}") from None
        if arrays and arr.shape != arrays[0].shape:
            raise DatasetError(
                f"dataset {name!r}: image {sid!r} has shape {arr.shape}, expected {arrays[0].shape}"
            )
        arrays.append(arr)
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    cidx = {c: i for i, c in enumerate(classes)}
    return ImageDataset(
        name=name,
        ids=tuple(e[0] for e in entries),
        x=torch.from_numpy(np.ascontiguousarray(x)),
        y=torch.tensor([cidx[e[2]] for e in entries], dtype=torch.long),
        is_test=torch.tensor([e[1] == "test" for e in entries]),
        classes=tuple(classes),
        kind="imagefolder",
    )


def _load_imagefolder_dir(root: Path) -> ImageDataset:
    entries = []
    for split in SPLITS:
        for f in sorted((root / split).glob("*/*")):
            rel = f.relative_to(root).as_posix()
            parsed = _parse_member(rel)
            if parsed and f.is_file():
                entries.append((rel, *parsed, f.read_bytes()))
    return _assemble(str(root), entries)


def _strip_top(names: list[str]) -> str:
    """Archives may wrap the layout in one top folder (``cifar10/train/...``): find that prefix."""
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(tops) == 1 and not tops & set(SPLITS):
        return tops.pop() + "/"
    return ""


def _load_imagefolder_archive(path: Path, cache_dir: Path) -> ImageDataset:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|v1".encode()).hexdigest()[:24]
    cached = cache_dir / f"{key}.npz"
    if cached.exists():
        with np.load(cached, allow_pickle=False) as z:
            return ImageDataset(
                name=str(path),
                ids=tuple(z["ids"].tolist()),
                x=torch.from_numpy(z["x"]),
                y=torch.from_numpy(z["y"]),
                is_test=torch.from_numpy(z["is_test"]),
                classes=tuple(z["classes"].tolist()),
                kind="imagefolder",
            )
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            names = [m.name.removeprefix("./") for m in members]
            prefix = _strip_top(names)
            entries = []
            for m, name in zip(members, names):
                rel = name[len(prefix) :] if name.startswith(prefix) else name
                parsed = _parse_member(rel)
                if parsed:
                    entries.append((rel, *parsed, tar.extractfile(m).read()))  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetError(f"cannot read archive {str(path)!r}: {e}") from None
    ds = _assemble(str(path), entries)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        ids=np.array(ds.ids),
        x=ds.x.numpy(),
        y=ds.y.numpy(),
        is_test=ds.is_test.numpy(),
        classes=np.array(ds.classes),
    )
    tmp.replace(cached)
    return ds
