"""`rfau audit ...`: The deletion ledger: verify it, show the proof for a request."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rfau.cli.common import (
    EXIT_AUDIT_PROBLEMS,
    StoreOpt,
    err,
    out,
    store_uri,
    tracking_settings,
)
from rfau.errors import RfauError

audit_app = typer.Typer(
    help="The deletion ledger: verify it, show the proof for a request.", no_args_is_help=True
)


# --- audit ------------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    store: StoreOpt = None,
    weights: Annotated[
        bool, typer.Option(help="Also download every version the ledger names and hash its weights.")
    ] = True,
) -> None:
    """Check the ledger's chain, its copies, the registry's anchors and the versions' weights."""
    from rfau.audit.trail import AuditTrail

    trail = AuditTrail.open(store_uri(store), tracking_settings())
    problems = trail.verify(check_weights=weights)
    n = len(trail.records()) if not problems else None
    if problems:
        for p in problems:
            err.print(f"[bold red]FAIL[/] {p}")
        raise typer.Exit(code=EXIT_AUDIT_PROBLEMS)
    out.print(
        f"[green]ledger intact[/]: {n} record(s); chain, copies, registry anchors"
        f"{' and weights' if weights else ''} verified"
    )


@audit_app.command("show")
def audit_show(
    request_id: Annotated[str, typer.Argument(help="The deletion request.")],
    store: StoreOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write proof.md, proof.html and the evidence here.")
    ] = None,
) -> None:
    """The proof of deletion for one request (Markdown on screen; Markdown + HTML with --out)."""
    import shutil

    from rfau.audit.proof import render_proof
    from rfau.audit.trail import AuditTrail
    from rfau.io import atomic_dir

    trail = AuditTrail.open(store_uri(store), tracking_settings())
    records = trail.find_request(request_id)
    if not records:
        raise RfauError(
            f"request {request_id!r} is in no ledger record (still pending, rejected, or unknown)"
        ) from None
    record = records[-1]  # the batch that settled it (earlier ones failed a gate)
    evidence = trail.evidence_dir(record["batch_id"])
    md, html = render_proof(record, request_id, evidence)
    if out_dir:
        with atomic_dir(out_dir) as tmp:
            (tmp / "proof.md").write_text(md)
            (tmp / "proof.html").write_text(html)
            if evidence.is_dir():
                for f in evidence.iterdir():
                    shutil.copy2(f, tmp / f.name)
    from rich.markdown import Markdown

    out.print(Markdown(md))
    if out_dir:
        out.print(f"proof written to {out_dir}/proof.md and {out_dir}/proof.html")
