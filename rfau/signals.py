"""SIGTERM as an error: a batch that is told to stop (a pod deleted, `kill`, a scheduler's
timeout) releases its claims and says so in one line, instead of dying silently with its
requests left in progress until the stale timeout."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rfau.errors import Terminated


@contextmanager
def sigterm_raises(what: str) -> Iterator[None]:
    """For the block, SIGTERM raises :class:`Terminated` in the main thread, so the block's own
    error handling (releasing claims) runs; a second SIGTERM while it does is ignored (a
    scheduler's SIGKILL after its grace period still ends the process). Outside the main thread
    (where Python runs no signal handler) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(f"{what} stopped by SIGTERM")

    def swallowed(unraisable) -> None:
        # the signal landed inside a finalizer (a __del__ the garbage collector ran), where Python
        # prints and drops any exception: deliver it again shortly, outside the finalizer
        if not isinstance(unraisable.exc_value, Terminated):
            return previous_hook(unraisable)
        signal.signal(signal.SIGTERM, stop)
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()

    previous, previous_hook = signal.signal(signal.SIGTERM, stop), sys.unraisablehook
    sys.unraisablehook = swallowed
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook
