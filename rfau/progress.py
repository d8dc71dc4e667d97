"""Rich progress bars for every training loop; ``RFAU_QUIET=1`` turns them off."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextmanager
def progress_bar(total: int, description: str) -> Iterator:
    """Yield ``advance(n=1, **fields)``; fields (e.g. loss=0.1) are shown after the bar."""
    disabled = os.environ.get("RFAU_QUIET", "") not in ("", "0")
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=disabled,
        transient=False,
    ) as prog:
        task = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: float) -> None:
            info = " ".join(f"{k}={v:.4g}" for k, v in fields.items())
            prog.update(task, advance=n, info=info)

        yield advance
