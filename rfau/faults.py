"""Fault injection for tests: the commit points of a batch's register state machine, where a test
crashes a real ``rfau batch run`` process to check that the next batch completes or undoes it.

    unlearn done                     UNLEARNED        (nothing decided yet: the claims are released)
    register 1: the version exists   VERSION_CREATED  (no ledger record: the version is abandoned)
    register 2: the record appended  RECORD_APPENDED  (it claims the promotion: recover moves the alias)
    register 3: the alias moved      PROMOTED         (recover settles the requests as the record says)

``RFAU_FAULT_AT=<point>`` SIGKILLs the process there (no cleanup, like a node failure);
``<point>:pause`` waits there instead (a test then signals the process). Both act only where the
test switch ``RFAU_TEST_FAULTS=1`` is set too, so a stray variable in a pod never kills it.
"""

from __future__ import annotations

import os
import signal
import time
from enum import StrEnum

from rfau.errors import UsageError

TEST_SWITCH = "RFAU_TEST_FAULTS"
PAUSE = ":pause"


class Fault(StrEnum):
    UNLEARNED = "unlearned"
    VERSION_CREATED = "register:version-created"
    RECORD_APPENDED = "register:record-appended"
    PROMOTED = "register:promoted"


def fault_point(point: Fault) -> None:
    """Crash (or pause) here when the test switch is on and RFAU_FAULT_AT names ``point``."""
    at = os.environ.get("RFAU_FAULT_AT", "")
    if not at or os.environ.get(TEST_SWITCH) != "1":
        return
    name = at.removesuffix(PAUSE)
    if name not in set(Fault):
        raise UsageError(f"RFAU_FAULT_AT={at!r} names no fault point: {', '.join(Fault)} (+ '{PAUSE}')")
    if name != point:
        return
    if at.endswith(PAUSE):
        time.sleep(600)
    else:
        os.kill(os.getpid(), signal.SIGKILL)
