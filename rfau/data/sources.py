"""Dataset kinds other than images, recognised by their source name (torch-free, a leaf module).

``rfau.data.datasets.OTHER_SOURCES`` maps each to the module that loads it, imported only when
such a source is read.
"""

from __future__ import annotations

from pathlib import Path

TEXT_SUFFIXES = (".csv", ".jsonl", ".parquet")  # text records (rfau.data.text)
FORTUNES = "fortunes"  # Debian's fortunes as a labelled text set (rfau.data.fortunes)


def is_text_source(source: str) -> bool:
    return source.lower().endswith(TEXT_SUFFIXES)


def is_fortunes_source(source: str) -> bool:
    """``fortunes`` or ``fortunes:DIR``."""
    return source == FORTUNES or source.startswith(FORTUNES + ":")


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
