"""A real labelled text set that can be had offline: Debian's ``fortunes`` package.

Each file under /usr/share/games/fortunes (``apt-get install fortunes``; ``make fortunes``) is
one category; its records are separated by lines holding only ``%``. Record ``i`` (0-based, in
file order) of category ``c`` gets the stable id ``c/i`` (ids do not move when other categories
are chosen, or when records are skipped). The text is the record with the overstrike
sequences of old terminals removed (``_\\bx``) and whitespace collapsed; empty records are
skipped. The test split is rfau.data.text's seeded split by id.

The default subset (``CATEGORIES``): five topical categories with 600 or more records each in
fortunes 1:1.99.1 (computers 1,050, definitions 1,203, politics 703, science 625, songs-poems
720); a benchmark caps them per class (``subset_dataset``) for CPU time.

Sources for ``load_dataset``: ``fortunes`` (``$RFAU_FORTUNES``, else Debian's folder) and
``fortunes:DIR`` (a folder of fortune files of the same category names).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from rfau.data.sources import FORTUNES as SOURCE
from rfau.data.sources import is_fortunes_source
from rfau.data.text import SPLIT_SEED, TEST_FRACTION, TextDataset, records_dataset
from rfau.errors import DatasetError

DEBIAN_FORTUNES = Path("/usr/share/games/fortunes")
CATEGORIES = ("computers", "definitions", "politics", "science", "songs-poems")
SEPARATOR = re.compile(r"^%\s*$", re.MULTILINE)
OVERSTRIKE = re.compile(r".\x08")  # "char, backspace": printed over by the next character


def find_fortunes(folder: str | Path | None = None) -> Path:
    """The given folder, else $RFAU_FORTUNES, else Debian's; DatasetError saying how to get it."""
    given = folder or os.environ.get("RFAU_FORTUNES")
    path = Path(given).expanduser() if given else DEBIAN_FORTUNES
    if not path.is_dir():
        where = f"{given!r}" if given else f"{DEBIAN_FORTUNES} (Debian's fortunes package)"
        raise DatasetError(
            f"fortunes not found at {where}: run `make fortunes` (apt-get install fortunes, as root) "
            "or set RFAU_FORTUNES to a folder of fortune files"
        )
    return path


def read_category(path: Path) -> list[tuple[int, str]]:
    """(index in the file, cleaned text) of every non-empty record of one fortune file."""
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DatasetError(f"cannot read fortune file {str(path)!r}: {e}") from None
    out = []
    for i, record in enumerate(SEPARATOR.split(raw)):
        text = " ".join(OVERSTRIKE.sub("", record).split())
        if text:
            out.append((i, text))
    return out


def load_fortunes(
    folder: str | Path | None = None,
    categories: Sequence[str] = CATEGORIES,
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
) -> TextDataset:
    """The chosen categories of a fortunes folder as a TextDataset (not yet tokenised):
    ids ``<category>/<index>``, label = category."""
    root = find_fortunes(folder)
    if not categories:
        raise DatasetError("fortunes: choose at least two categories")
    missing = [c for c in categories if not (root / c).is_file()]
    if missing:
        raise DatasetError(f"fortunes folder {str(root)!r} has no category file(s) {missing}")
    records, digest = [], hashlib.sha256()
    for category in categories:
        digest.update(f"{category}\0{hashlib.sha256((root / category).read_bytes()).hexdigest()}\0".encode())
        records += [
            {"id": f"{category}/{i}", "text": text, "label": category}
            for i, text in read_category(root / category)
        ]
    name = f"{SOURCE}:{root}[{','.join(categories)}]"
    return records_dataset(name, records, digest.hexdigest(), test_fraction, seed)


def load_fortunes_source(source: str) -> TextDataset:
    """``fortunes`` or ``fortunes:DIR`` -> the default categories of that folder."""
    folder = source.split(":", 1)[1] if ":" in source else None
    if folder == "":
        raise DatasetError("fortunes: give the folder after the colon (fortunes:DIR), or just 'fortunes'")
    return load_fortunes(folder)


__all__ = ["CATEGORIES", "find_fortunes", "is_fortunes_source", "load_fortunes", "read_category"]
