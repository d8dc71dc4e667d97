"""Dataset kinds other than images, found by their source name (torch-free).

``rfau.data`` registers them when the package loads, so ``load_dataset`` takes them wherever it is
imported from, while the modules that read them (and torch) load only when such a source is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TEXT_SUFFIXES = (".csv", ".jsonl", ".parquet")  # text records (rfau.data.text)

# (accepts(source), load(source)) pairs, tried in order by rfau.data.datasets.load_dataset
SOURCE_LOADERS: list[tuple[Callable[[str], bool], Callable[[str], Any]]] = []


def is_text_source(source: str) -> bool:
    return source.lower().endswith(TEXT_SUFFIXES)
