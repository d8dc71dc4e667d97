"""`rfau audit ...`: The deletion ledger: verify it, show the proof for a request."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
from rfau.errors import ExitCode, UnknownRequestError

audit_app = RfauTyper(
    help="The deletion ledger: verify it, show the proof for a request.", no_args_is_help=True
)


# --- audit ------------------------------------------------------------------------------------------


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
    from rfau.audit.trail import AuditTrail

    trail = AuditTrail.open(store_uri(store), tracking_settings())
    problems = trail.verify(check_weights=weights)
    n = len(trail.records()) if not problems else None
    for p in problems:
        err.print(f"[bold red]FAIL[/] {p}")
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
    import shutil

    from rfau.audit.proof import render_proof
    from rfau.audit.trail import AuditTrail
    from rfau.io import atomic_dir, claim_output

    if out_dir:
        claim_output(out_dir, "audit show")  # before the ledger is read
    trail = AuditTrail.open(store_uri(store), tracking_settings())
    records = trail.find_request(request_id)
    if not records:
        raise UnknownRequestError(
            f"request {request_id!r} is in no ledger record (still pending, rejected, or unknown)"
        ) from None
    record = records[-1]  # the batch that settled it (earlier ones failed a gate)
    evidence = trail.evidence_dir(record["batch_id"])
    md, html = render_proof(record, request_id, evidence)
    if out_dir:
        with atomic_dir(out_dir, "audit show") as tmp:
            (tmp / "proof.md").write_text(md)
            (tmp / "proof.html").write_text(html)
            if evidence.is_dir():
                for f in evidence.iterdir():
                    shutil.copy2(f, tmp / f.name)
    if as_json:
        emit(as_json, {"request_id": request_id, "record": record, "proof_markdown": md, "out": out_dir})
        return
    from rich.markdown import Markdown

    out.print(Markdown(md))
    if out_dir:
        out.print(f"proof written to {out_dir}/proof.md and {out_dir}/proof.html")
