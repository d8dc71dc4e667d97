"""The kinds of ledger records besides a deletion batch's, and which aliases are served."""

from __future__ import annotations

MOVE = "champion-move"  # an operator moved the champion (`rfau promote`, `rfau rollback`)
ALREADY_FORGOTTEN = "already-forgotten"  # requests whose samples the champion no longer held
HELD_ALIASES_OK = ("previous", "candidate")  # rollback targets and failed versions: never served


def held_requests(fulfilled: list[str], frontier: set[str]) -> list[str]:
    """The fulfilled requests whose data a version with ``frontier`` still holds."""
    return sorted(set(fulfilled) - frontier)
