"""Dataset kinds other than images, found by their source name (torch-free).

``rfau.data`` registers them when the package loads, so ``load_dataset`` takes them wherever it is
imported from, while the modules that read them (and torch) load only when such a source is read.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
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
