"""`rfau audit ...`: The deletion ledger: verify it, show the proof for a request."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown

from rfau.audit.consistency import evidence_problems
from rfau.audit.proof import render_proof
from rfau.audit.trail import AuditTrail
from rfau.cli.common import (
    JsonOpt,
    RfauTyper,
    StoreOpt,
    emit,
    err,
    out,
    store_uri,
    tracking_settings,
)
from rfau.data.request_store import RequestStore
from rfau.errors import ExitCode, UnknownRequestError, UsageError
from rfau.io import atomic_dir, claim_output
from rfau.tracking.registry import Registry

audit_app = RfauTyper(
    help="The deletion ledger: verify it, show the proof for a request.", no_args_is_help=True
)


# --- audit ------------------------------------------------------------------------------------------


def _open_audited(store: str | None):
    """The audit trail of an existing state (exit 2 naming what is missing: a mistyped state
    folder or store is never an empty ledger); a read command creates nothing."""
    settings = tracking_settings()
    uri = store_uri(store)
    RequestStore.open(uri)  # never initialised: a UsageError naming it
    trail = AuditTrail.open(uri, settings)
    if not settings.registry_exists() and trail.ledger_bytes():
        raise UsageError(
            f"no registry in state folder {str(settings.state_dir)!r} (RFAU_STATE_DIR) for the ledger in "
            f"{uri}: mlflow.db is missing; check the path (or set RFAU_TRACKING_URI)"
        )
    return trail


@audit_app.command("verify")
def audit_verify(
    store: StoreOpt = None,
    weights: Annotated[
        bool, typer.Option(help="Also download every version the ledger names and hash its weights.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Check the ledger's chain, its copies, the registry's anchors and the versions' weights.

    Exit code 1 when it finds problems (each one a FAIL line on stderr)."""
    trail = _open_audited(store)
    problems = trail.verify(check_weights=weights)
    n = len(trail.records()) if not problems else None
    for p in problems:
        err.print(f"[bold red]FAIL[/] {p}")
    for note in getattr(trail, "notes", []):
        err.print(f"[yellow]note[/] {note}")
    emit(
        as_json,
        {"intact": not problems, "records": n, "weights_checked": weights, "problems": problems},
        lambda: (
            out.print(
                f"[green]ledger intact[/]: {n} record(s); chain, copies, registry anchors"
                f"{' and weights' if weights else ''} verified"
            )
            if not problems
            else None
        ),
    )
    if problems:
        raise typer.Exit(code=ExitCode.CHECK_FAILED)


@audit_app.command("show")
def audit_show(
    request_id: Annotated[str, typer.Argument(help="The deletion request.")],
    store: StoreOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "--output", "-o", help="Write proof.md, proof.html and the evidence here."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The proof of deletion for one request (Markdown on screen; Markdown + HTML with --out)."""
    if out_dir:
        claim_output(out_dir, "audit show")  # before the ledger is read
    trail = _open_audited(store)
    records = trail.find_request(request_id)
    if not records:
        raise UnknownRequestError(
            f"request {request_id!r} is in no ledger record (still pending, rejected, or unknown)"
        ) from None
    record = records[-1]  # the batch that settled it (earlier ones failed a gate)
    reopened = [
        r for r in trail.records() if request_id in r.get("reopened", []) and r["seq"] > record["seq"]
    ]
    if reopened:
        r = reopened[-1]
        raise UsageError(
            f"request {request_id!r} was reopened by ledger record {r['seq']} (the champion moved to "
            f"version {r['model']['after']['version']}, which holds its data): no proof until a new "
            "batch forgets it"
        )
    serving = _serving_note(record)
    evidence = trail.evidence_dir(record["batch_id"])
    md, html = render_proof(record, request_id, evidence)
    bad = evidence_problems(record, trail.store, trail.local_dir)
    if out_dir:
        with atomic_dir(out_dir, "audit show") as tmp:
            (tmp / "proof.md").write_text(md)
            (tmp / "proof.html").write_text(html)
            if evidence.is_dir():
                for f in evidence.iterdir():
                    shutil.copy2(f, tmp / f.name)
    if as_json:
        emit(
            as_json,
            {
                "request_id": request_id,
                "record": record,
                "proof_markdown": md,
                "out": out_dir,
                "serving": serving,
                "problems": bad,
            },
        )
    else:
        out.print(Markdown(md))
        if serving:
            out.print(f"[yellow]now serving[/]: {serving}")
        if out_dir:
            out.print(f"proof written to {out_dir}/proof.md and {out_dir}/proof.html")
    for p in bad:
        err.print(f"[bold red]FAIL[/] {p}")
    if bad:
        raise typer.Exit(code=ExitCode.CHECK_FAILED)


def _serving_note(record: dict) -> str | None:
    """What serves when it is not what the record promoted (a pending promotion, a later batch or
    an operator move) -> one line, else None."""
    after = (record.get("model") or {}).get("after") or {}
    champ = Registry(tracking_settings()).champion()
    if not record.get("promoted") or champ is None or champ.version == after.get("version"):
        return None
    return (
        f"version {champ.version} (ledger record {record['seq']} promoted version {after.get('version')}; "
        "a later batch or move replaced it, or its promotion is still pending)"
    )
