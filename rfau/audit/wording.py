"""The words of a proof of deletion: its first sentence (fulfilled or not, exact or
approximate), the gate table with each test's power, the escalation ladder's attempts and the
deadline. Records from before any of these keys existed render without them."""

from __future__ import annotations

import json

NONE = "—"


def _num(v) -> str:
    if isinstance(v, bool) or v is None:
        return NONE if v is None else str(v)
    if isinstance(v, int | float):
        return f"{v:.2f}"
    return str(v)


def _text(v) -> str:
    if v is None or v == "":
        return NONE
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    return str(v)


def _after_version(record: dict):
    model = record.get("model")
    after = model.get("after") if isinstance(model, dict) else None
    return after.get("version") if isinstance(after, dict) else None


GATE_HEAD = ["Gate", "Value", "Bound", "n", "Detectable", "Verdict", "Detail"]
VERDICT_COL = 5


def _gates(record: dict) -> list[dict]:
    return [g for g in record.get("gates") or [] if isinstance(g, dict)]


def _verdict(g: dict) -> str:
    if g.get("measurable") is False:
        return "NOT MEASURABLE"
    return "PASS" if g.get("passed") is True else "FAIL"


def _gate_rows(record: dict) -> list[tuple[str, ...]]:
    return [
        (
            _text(g.get("name")),
            _num(g.get("value")),
            _num(g.get("bound")),
            _text(g.get("n")),
            _num(g.get("detectable")),
            _verdict(g),
            _text(g.get("detail")),
        )
        for g in _gates(record)
    ]


def _power_lines(record: dict) -> list[str]:
    """What the evidence could have detected at this forget set's size (rfau.power), and which
    evidence could not be measured at all; empty for records from before either was recorded."""
    lines = []
    for g in _gates(record):
        name = _text(g.get("name"))
        if g.get("measurable") is False:
            lines.append(f"{name}: NOT MEASURABLE: {_text(g.get('reason'))}")
        elif isinstance(g.get("detectable"), int | float):
            size = f"n = {g['n']}" if g.get("n") is not None else "this size"
            lines.append(
                f"{name}: at {size} the smallest value the test detects (alpha 0.05, power 0.8) is "
                f"{g['detectable']:.3g}; bound {_num(g.get('bound'))}, measured {_num(g.get('value'))}"
            )
    return lines


ATTEMPT_HEAD = ["Rung", "Method", "Seconds", "Gates passed", "Failed gates", "Why", "Config"]


def _attempt_rows(record: dict) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for a in record.get("attempts") or []:
        if not isinstance(a, dict):
            continue
        failed = a.get("failed_gates")
        rows.append(
            (
                _text(a.get("rung")),
                _text(a.get("method")),
                _num(a.get("seconds")),
                _text(a.get("gates_passed")),
                ", ".join(map(str, failed)) if isinstance(failed, list) and failed else _text(failed or None),
                _text(a.get("why")),
                _text(a.get("config")),
            )
        )
    return rows


def _is_exact(record: dict) -> bool:
    """Exact only for a model retrained without the data: the ladder's retrain rung (``exact``)
    or a batch whose method was retrain."""
    return record.get("exact") is True or record.get("method") == "retrain"


def _kind(record: dict) -> str:
    if _is_exact(record):
        return "exact: retrained without the data"
    return f"approximate: {_text(record.get('method'))}"


def _deadline(record: dict, request_id: str) -> dict:
    d = record.get("deadlines")
    got = d.get(request_id) if isinstance(d, dict) else None
    return got if isinstance(got, dict) else {}


def _deadline_rows(record: dict, request_id: str) -> list[tuple[str, object]]:
    d = _deadline(record, request_id)
    if not d:
        return []
    return [("Due", d.get("due")), ("Deadline met", d.get("met"))]


def headline(record: dict, request_id: str) -> str:
    """The proof's first sentence (plain text): whether the request was fulfilled, and how.
    Only a promoted version whose gates passed fulfils it; "exact" only for a retrained model,
    an approximate deletion is called what it is, and nothing claims a model "no longer knows"."""
    batch, after = _text(record.get("batch_id")), _text(_after_version(record))
    champion = record.get("champion_after")
    held = f"the champion (version {champion})" if champion is not None else "the champion"
    failed = [_text(g.get("name")) for g in _gates(record) if g.get("passed") is False]
    if record.get("gates_passed") is False:
        text = (
            f"Request {request_id} was NOT fulfilled by batch {batch}: model version {after} failed "
            f"its gates ({', '.join(failed) or 'see below'}) and was not promoted; {held} was not "
            "replaced by it and still holds the data."
        )
    elif record.get("gates_passed") is not True:
        text = (
            f"Request {request_id} was NOT fulfilled by batch {batch}: no gate verdict is recorded, "
            "so nothing certifies a deletion."
        )
    elif record.get("promoted") is not True:
        why = f" ({_text(record.get('held_back'))})" if record.get("held_back") else ""
        text = (
            f"Request {request_id} was NOT fulfilled by batch {batch}: model version {after} passed its "
            f"gates but was not promoted{why}; {held} still holds the data."
        )
    elif _is_exact(record):
        text = (
            f"Request {request_id} was fulfilled by batch {batch} (exact): model version {after} was "
            "retrained without its data and is the champion."
        )
    else:
        text = (
            f"Request {request_id} was fulfilled by batch {batch} (approximate: "
            f"{_text(record.get('method'))}; indistinguishable from unseen data within the evidence "
            f"below): model version {after} is the champion."
        )
    d = _deadline(record, request_id)
    if d.get("met") is False:
        text += f" It missed its deadline (due {_text(d.get('due'))})."
    elif d.get("met") is True:
        text += f" It met its deadline (due {_text(d.get('due'))})."
    if any(g.get("measurable") is False for g in _gates(record)):
        text += " Some evidence could not be measured at this size (see Evidence power)."
    return text
