"""Sample ids: stable strings that become store keys and file paths (a leaf module)."""

from __future__ import annotations

from rfau.errors import RfauError
from rfau.storage import check_key


def unsafe_id_reason(sample_id: str) -> str | None:
    """Why an id looks like a path trick (absolute, ``..``, backslashes...), or None if clean.

    Sample ids become store keys and file paths, so the rules are the store's (``check_key``).
    """
    if not sample_id:
        return "empty sample id"
    try:
        check_key(sample_id)
    except RfauError as e:
        return str(e).rsplit(": ", 1)[-1]  # check_key says "invalid store key '<key>': <problem>"
    return None
