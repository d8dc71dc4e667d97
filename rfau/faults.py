"""Fault injection for tests: ``RFAU_FAULT_AT=<point>`` SIGKILLs the process at that point.

Without the variable :func:`fault_point` does nothing; it exists so tests can reproduce a crash
at a chosen stage of a real ``rfau batch run`` subprocess.
"""

from __future__ import annotations

import os
import signal
import time


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL (no cleanup, like a node failure) when RFAU_FAULT_AT names
    ``name``; with ``<name>:pause`` wait there instead (a test then signals the process)."""
    at = os.environ.get("RFAU_FAULT_AT")
    if at == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif at == f"{name}:pause":
        time.sleep(600)
