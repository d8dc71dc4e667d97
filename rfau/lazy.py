"""PEP 562 exports, the one way a package hands out names that need a heavy library: its
``__init__`` lists name -> module and sets ``__getattr__ = lazy_exports(__name__, table)``; the
module is imported on the name's first use (``from rfau.data import load_dataset`` loads torch then,
``import rfau.data`` does not)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, table: dict[str, str], submodules: bool = False) -> Callable[[str], Any]:
    """The package's module ``__getattr__``: a name of ``table`` from its module; with
    ``submodules``, also the package's submodules by attribute (``rfau.batch.registration``), as
    an eagerly imported package has them."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(import_module(table[name]), name)
        if submodules:
            try:
                return import_module(f"{package}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
