"""Dataset kinds other than images, found by their source name (torch-free).

``rfau.data`` registers them when the package loads, so ``load_dataset`` takes them wherever it is
imported from, while the modules that read them (and torch) load only when such a source is read.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".csv", ".jsonl", ".parquet")  # text records (rfau.data.text)
FORTUNES = "fortunes"  # Debian's fortunes as a labelled text set (rfau.data.fortunes)

# (accepts(source), load(source)) pairs, tried in order by rfau.data.datasets.load_dataset
SOURCE_LOADERS: list[tuple[Callable[[str], bool], Callable[[str], Any]]] = []


def is_text_source(source: str) -> bool:
    return source.lower().endswith(TEXT_SUFFIXES)


def is_fortunes_source(source: str) -> bool:
    """``fortunes`` or ``fortunes:DIR``."""
    return source == FORTUNES or source.startswith(FORTUNES + ":")


def _load_fortunes(source: str) -> Any:
    return import_module("rfau.data.fortunes").load_fortunes_source(source)


SOURCE_LOADERS.append((is_fortunes_source, _load_fortunes))


# a Hugging Face `datasets` folder written by save_to_disk (rfau.data.saved): a Dataset's or a
# DatasetDict's marker file; the source may carry column options after '?'
SAVED_DATASET_MARKERS = (("state.json", "dataset_info.json"), ("dataset_dict.json",))


def saved_dataset_path(source: str) -> Path:
    return Path(source.partition("?")[0]).expanduser()


def is_saved_dataset(source: str) -> bool:
    if "://" in source:
        return False
    path = saved_dataset_path(source)
    return path.is_dir() and any(all((path / f).is_file() for f in marks) for marks in SAVED_DATASET_MARKERS)


def _load_saved(source: str) -> Any:
    return import_module("rfau.data.saved").load_saved_dataset(source)


SOURCE_LOADERS.append((is_saved_dataset, _load_saved))  # load_dataset takes save_to_disk folders
