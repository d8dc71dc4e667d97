"""Proof of deletion: a human-readable account, from one ledger record, of how a request was honoured.

``render_proof`` gives the same content twice: Markdown (evidence images linked by relative file
name, for a proof kept beside its evidence folder) and a self-contained HTML page (inline style,
PNG evidence embedded as base64, every value escaped, no external resources).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from rfau.audit.ledger import record_hash
from rfau.audit.wording import (
    ATTEMPT_HEAD,
    GATE_HEAD,
    NONE,
    VERDICT_COL,
    _attempt_rows,
    _deadline_rows,
    _gate_rows,
    _kind,
    _num,
    _power_lines,
    _text,
    headline,
)
from rfau.errors import RfauError
from rfau.io import sha256_file

# (metric key, label, what it measures); percent
METRICS = [
    ("ua", "UA", "unlearning accuracy: error on the forget set"),
    ("ra", "RA", "accuracy on the retained training data"),
    ("ta", "TA", "test accuracy"),
    ("ta_kept_classes", "TA (kept classes)", "test accuracy on the classes kept"),
    ("mia_confidence", "MIA (forget)", "membership-inference efficacy on the forget set"),
    ("mia_confidence_test", "MIA (test)", "the same attack on unseen test data"),
]
OK, BAD = "✓", "✗"


def _delta(after, before) -> str:
    if (
        isinstance(after, int | float)
        and isinstance(before, int | float)
        and not isinstance(after, bool)
        and not isinstance(before, bool)
    ):
        return f"{after - before:+.2f}"
    return NONE


def _evidence(record: dict, evidence_dir: Path | None) -> list[dict]:
    """One row per evidence file: name, recorded sha256, status text, ok (True/False/None), path
    if it matches."""
    rows = []
    evidence = record.get("evidence") or {}
    if not isinstance(evidence, dict):
        evidence = {}
    for name, want in sorted(evidence.items()):
        row: dict[str, object] = {
            "name": str(name),
            "sha256": _text(want),
            "ok": None,
            "status": "not checked",
            "path": None,
        }
        if evidence_dir is not None:
            p = Path(evidence_dir) / str(name)
            if not name or Path(name).name != name or name in (".", ".."):
                row.update(ok=False, status=f"{BAD} not a plain file name: not read")
            elif not p.is_file():
                row.update(ok=False, status=f"{BAD} missing from the evidence folder")
            elif sha256_file(p) != want:
                row.update(ok=False, status=f"{BAD} does not match: the file was changed")
            else:
                row.update(ok=True, status=f"{OK} matches", path=p)
        rows.append(row)
    return rows


def _dict(value: object) -> dict:
    """``value`` where it is a JSON object, else empty: a record is read as found, never trusted."""
    return value if isinstance(value, dict) else {}


def _facts(record: dict, request_id: str) -> dict:
    model = _dict(record.get("model"))
    before = _dict(model.get("before"))
    after = _dict(model.get("after"))
    subjects = _dict(record.get("subject_hashes"))
    rids = record.get("request_ids") or []
    classes = record.get("forget_classes")
    config = _dict(record.get("config"))
    return {
        "request": [
            ("Request id", request_id),
            ("Data subject (salted hash)", subjects.get(request_id)),
            ("Deletion batch", record.get("batch_id")),
            ("Requests in the batch", len(rids)),
            ("Recorded in the ledger at", record.get("recorded_at")),
            (
                "Batch started / finished",
                f"{_text(record.get('started_at'))} / {_text(record.get('finished_at'))}",
            ),
            ("Dataset", record.get("dataset")),
            *_deadline_rows(record, request_id),
        ],
        "forget": [
            ("Forget set md5 (DVC, forget.txt)", record.get("forget_md5")),
            ("Forget set size (samples)", record.get("forget_count")),
            ("Classes forgotten whole", ", ".join(map(str, classes)) if classes else None),
        ],
        "model": [
            ("Model", model.get("name")),
            ("Version that had the data", before.get("version")),
            ("Its weights sha256 (before)", before.get("weights_sha256")),
            ("Version the batch produced", after.get("version")),
            ("Its weights sha256 (after)", after.get("weights_sha256")),
            ("Promoted to champion", record.get("promoted")),
            ("Champion version after the batch", record.get("champion_after")),
            ("Deletion", _kind(record)),
        ],
        "method": [("Method", record.get("method"))]
        + [(f"config.{k}", v) for k, v in sorted(config.items())],
        "ledger": [
            ("seq", record.get("seq")),
            ("hash", record.get("hash")),
            ("prev_hash", record.get("prev_hash")),
            ("Record hash matches its content", record.get("hash") == record_hash(record)),
            ("Code version", record.get("code_version")),
            ("MLflow run", record.get("mlflow_run_id")),
        ],
    }


def _metric_rows(record: dict) -> list[tuple[str, str, str, str, str]]:
    m = _dict(record.get("metrics"))
    b = _dict(record.get("baseline_metrics"))
    return [
        (label, _num(m.get(key)), _num(b.get(key)), _delta(m.get(key), b.get(key)), doc)
        for key, label, doc in METRICS
        if key in m or key in b
    ]


def _overall(record: dict) -> str:
    gp = record.get("gates_passed")
    if gp is True:
        return "all gates passed"
    if gp is False:
        return "gates FAILED"
    return "gates not recorded"


POWER_HOW = (
    "Each test's power at this forget set's size: the smallest AUC or member rate it detects "
    "with probability 0.8 at level 0.05 (rfau.power). An attacker's advantage below that would "
    "not have shown: a small forget set is weaker evidence than a large one."
)

VERIFY_HOW = (
    "Verify the ledger's integrity with `rfau audit verify` (it checks every record's hash, the "
    "prev_hash chain, the seq order and the anchors kept in the model registry). The record's hash "
    "is the sha256 of its canonical JSON (sorted keys, no spaces, ASCII) without the `hash` key."
)


def _md_cell(v) -> str:
    return _text(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _markdown(record: dict, request_id: str, facts: dict, metric_rows, gate_rows, evidence) -> str:
    out = [
        f"# Proof of deletion: request `{_md_cell(request_id)}`",
        "",
        _md_cell(headline(record, request_id)),
        "",
    ]

    def table(title, rows):
        out.extend([f"## {title}", "", "| | |", "|---|---|"])
        out.extend(f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in rows)
        out.append("")

    table("Request", facts["request"])
    table("Forget set", facts["forget"])
    table("Model", facts["model"])
    table("Method", facts["method"])
    out += ["## Metrics (percent)", ""]
    if metric_rows:
        out += [
            "| Metric | After | Baseline (previous champion) | Change | Meaning |",
            "|---|---:|---:|---:|---|",
        ]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in metric_rows]
    else:
        out.append("No metrics recorded.")
    attempts = _attempt_rows(record)
    if attempts:
        out += ["", "## Attempts (escalation ladder)", ""]
        out += ["| " + " | ".join(ATTEMPT_HEAD) + " |", "|" + "---|" * len(ATTEMPT_HEAD)]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in attempts]
    out += ["", f"## Gates: {_overall(record)}", ""]
    if gate_rows:
        out += ["| " + " | ".join(GATE_HEAD) + " |", "|---|---:|---:|---:|---:|---|---|"]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in gate_rows]
    else:
        out.append("No gates recorded.")
    power = _power_lines(record)
    if power:
        out += ["", "## Evidence power", "", POWER_HOW, ""] + [f"- {_md_cell(p)}" for p in power]
    out += ["", "## Evidence", ""]
    if evidence:
        out += ["| File | sha256 | Check |", "|---|---|---|"]
        out += [
            f"| {_md_cell(e['name'])} | `{_md_cell(e['sha256'])}` | {_md_cell(e['status'])} |"
            for e in evidence
        ]
        for e in evidence:
            if e["name"].lower().endswith(".png") and e["ok"] is not False:
                out += ["", f"![{_md_cell(e['name'])}]({_md_cell(e['name'])})"]
    else:
        out.append("No evidence files recorded.")
    out += ["", "## Ledger position", ""]
    out += ["| | |", "|---|---|"] + [f"| {_md_cell(k)} | `{_md_cell(v)}` |" for k, v in facts["ledger"]]
    out += ["", "## How to verify", "", VERIFY_HOW, ""]
    return "\n".join(out)


STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;vertical-align:top}code{font-size:.9em;word-break:break-all}.pass{color:#17692a;font-weight:bold}
.fail{color:#b00020;font-weight:bold}img{max-width:100%;border:1px solid #ddd}
"""


def _html(record: dict, request_id: str, facts: dict, metric_rows, gate_rows, evidence) -> str:
    e = html.escape

    def esc(v) -> str:
        return e(_text(v))

    def kv_table(rows, code=False) -> str:
        cells = "".join(
            f"<tr><th>{esc(k)}</th><td>{'<code>' if code else ''}{esc(v)}"
            f"{'</code>' if code else ''}</td></tr>"
            for k, v in rows
        )
        return f"<table>{cells}</table>"

    def grid(head, rows, verdict_col=None) -> str:
        th = "".join(f"<th>{e(h)}</th>" for h in head)
        body = []
        for row in rows:
            tds = []
            for i, c in enumerate(row):
                kind = "pass" if c == "PASS" else "fail" if c == "FAIL" else ""
                cls = f' class="{kind}"' if i == verdict_col and kind else ""
                tds.append(f"<td{cls}>{esc(c)}</td>")
            body.append(f"<tr>{''.join(tds)}</tr>")
        return f"<table><tr>{th}</tr>{''.join(body)}</table>"

    attempts = _attempt_rows(record)
    power = _power_lines(record)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>Proof of deletion: {esc(request_id)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>Proof of deletion: request <code>{esc(request_id)}</code></h1>",
        f"<p>{esc(headline(record, request_id))}</p>",
        "<h2>Request</h2>",
        kv_table(facts["request"]),
        "<h2>Forget set</h2>",
        kv_table(facts["forget"]),
        "<h2>Model</h2>",
        kv_table(facts["model"]),
        "<h2>Method</h2>",
        kv_table(facts["method"]),
        "<h2>Metrics (percent)</h2>",
        grid(["Metric", "After", "Baseline (previous champion)", "Change", "Meaning"], metric_rows)
        if metric_rows
        else "<p>No metrics recorded.</p>",
        *(["<h2>Attempts (escalation ladder)</h2>", grid(ATTEMPT_HEAD, attempts)] if attempts else []),
        f"<h2>Gates: {e(_overall(record))}</h2>",
        grid(GATE_HEAD, gate_rows, verdict_col=VERDICT_COL) if gate_rows else "<p>No gates recorded.</p>",
        *(
            ["<h2>Evidence power</h2>", f"<p>{e(POWER_HOW)}</p>", "<ul>"]
            + [f"<li>{esc(p)}</li>" for p in power]
            + ["</ul>"]
            if power
            else []
        ),
        "<h2>Evidence</h2>",
    ]
    if evidence:
        rows = "".join(
            f"<tr><td>{esc(x['name'])}</td><td><code>{esc(x['sha256'])}</code></td>"
            f'<td class="{"pass" if x["ok"] else "fail" if x["ok"] is False else ""}">'
            f"{esc(x['status'])}</td></tr>"
            for x in evidence
        )
        parts.append(f"<table><tr><th>File</th><th>sha256</th><th>Check</th></tr>{rows}</table>")
        for x in evidence:
            if x["name"].lower().endswith(".png") and x["path"] is not None:
                data = base64.b64encode(x["path"].read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{esc(x["name"])}">'
                    f"<figcaption>{esc(x['name'])}</figcaption></figure>"
                )
    else:
        parts.append("<p>No evidence files recorded.</p>")
    how = (
        e(VERIFY_HOW)
        .replace("`rfau audit verify`", "<code>rfau audit verify</code>")
        .replace("`hash`", "<code>hash</code>")
    )
    parts += [
        "<h2>Ledger position</h2>",
        kv_table(facts["ledger"], code=True),
        "<h2>How to verify</h2>",
        f"<p>{how}</p>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def render_proof(record: dict, request_id: str, evidence_dir: Path | None) -> tuple[str, str]:
    """(markdown, html) proof of deletion of ``request_id`` by the batch ``record`` describes.

    Evidence files are checked against the sha256 the record holds when ``evidence_dir`` is given;
    only PNGs that still match are embedded in the HTML."""
    if not isinstance(record, dict):
        raise RfauError("render_proof needs a ledger record (a dict)")
    rids = record.get("request_ids")
    if not isinstance(rids, list) or request_id not in rids:
        raise RfauError(
            f"request {request_id!r} is not in ledger record seq {record.get('seq')} "
            f"(batch {record.get('batch_id')!r})"
        )
    facts = _facts(record, request_id)
    evidence = _evidence(record, Path(evidence_dir) if evidence_dir is not None else None)
    metric_rows, gate_rows = _metric_rows(record), _gate_rows(record)
    return (
        _markdown(record, request_id, facts, metric_rows, gate_rows, evidence),
        _html(record, request_id, facts, metric_rows, gate_rows, evidence),
    )
