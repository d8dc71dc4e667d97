"""Progress of every training loop: a rich progress bar on a terminal, one plain log line per
step (epoch) elsewhere (pod logs, CI, files: a bar would only appear once its loop ends, full of
escape codes); ``RFAU_QUIET=1`` turns both off."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def _quiet() -> bool:
    return os.environ.get("RFAU_QUIET", "") not in ("", "0")


def _fields(fields: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in fields.items())


@contextmanager
def quiet_transformers_bars() -> Iterator[None]:
    """transformers' own progress bars (loading weights) off under ``RFAU_QUIET``, like rfau's."""
    if not _quiet():
        yield
        return
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:  # a caller's own setting stays as it was
            logging.enable_progress_bar()


@contextmanager
def _log_lines(total: int, description: str) -> Iterator[Callable[..., None]]:
    """``advance`` writes "<description>: <done>/<total> <seconds>s <fields>" to stderr, flushed."""
    started, done = time.monotonic(), 0

    def advance(n: int = 1, **fields: float) -> None:
        nonlocal done
        done += n
        line = f"{description}: {done}/{total} {time.monotonic() - started:.1f}s {_fields(fields)}"
        print(line.rstrip(), file=sys.stderr, flush=True)

    yield advance


@contextmanager
def _bar(total: int, description: str) -> Iterator[Callable[..., None]]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    ) as prog:
        task = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: float) -> None:
            prog.update(task, advance=n, info=_fields(fields))

        yield advance


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``, called once per step; fields (e.g. loss=0.1) are shown
    after the bar or at the end of the step's log line."""
    if _quiet():
        yield lambda n=1, **fields: None
    elif console.is_terminal:
        with _bar(total, description) as advance:
            yield advance
    else:
        with _log_lines(total, description) as advance:
            yield advance
