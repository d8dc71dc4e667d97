"""Printing a stage's or a batch's result for people (rich): the CLI's and the pipeline's outputs,
and the warnings about the request store that listing it and running a batch give."""

from __future__ import annotations

import typer
from rich.table import Table

from rfau.cli.common import err, out
from rfau.data.deadlines import unfinished_overdue
from rfau.data.request_store import RequestStore, stale_after_hours
from rfau.errors import ExitCode
from rfau.power import one_line
from rfau.records import BatchMeta, Registered, RunSummary, Skipped


def print_split(meta: BatchMeta) -> None:
    for r in meta.rejected:
        err.print(f"[yellow]rejected {r.request_id}:[/] {r.reason}")
    if meta.empty:
        out.print(
            f"batch {meta.batch_id}: nothing to forget "
            f"({'no pending requests' if not meta.request_ids else 'already forgotten'})"
        )
    else:
        out.print(
            f"batch {meta.batch_id}: requests {', '.join(meta.request_ids)}; forget set "
            f"{meta.forget_count} samples (md5 {meta.forget_md5}); base version {meta.require_base().version}"
        )


def print_registered(res: Registered | Skipped) -> None:
    if isinstance(res, Skipped):
        out.print(f"nothing registered: {res.reason}")
        return
    if res.promoted:
        verdict = "gates passed: promoted to champion; requests fulfilled"
    elif res.gates_passed:  # another batch promoted its version meanwhile (see the ledger record)
        verdict = (
            "gates passed, not promoted: the champion moved while the batch ran; requests back to pending"
        )
    else:
        verdict = "a gate failed: champion unchanged; requests back to pending"
    out.print(
        f"{res.model} version {res.version} ({verdict}); champion is version {res.champion}; "
        f"ledger record {res.ledger_seq}"
    )


def exit_if_overdue(store: str, deadline_days: int) -> None:
    """A scheduled run that leaves a request past its due date unfulfilled fails loudly: one line
    naming them, exit CHECK_FAILED (the batch itself has completed and recorded what it did)."""
    late = unfinished_overdue(RequestStore.from_uri(store), deadline_days)
    if late:
        err.print(f"[red]overdue:[/] request(s) past their due date and not fulfilled: {', '.join(late)}")
        raise typer.Exit(code=ExitCode.CHECK_FAILED)


def warn_stuck(reqs) -> None:
    """Say so when requests have been in progress for longer than the batch timeout."""
    stuck = reqs.stale_in_progress()
    for line in dict.fromkeys(reqs.corrupt):  # found while listing: said once each
        err.print(f"[yellow]warning:[/] {line}", soft_wrap=True)
    if stuck:
        err.print(
            f"[yellow]warning:[/] {len(stuck)} request(s) in progress for more than "
            f"{stale_after_hours():g} h "
            f"({', '.join(s.request_id for s in stuck)}): their batch probably died; the next batch takes "
            "them up, or `rfau request release --stale` puts them back now"
        )


def exit_if_gates_failed(res: Registered | Skipped) -> None:
    """A batch that completed but failed a gate (its version registered, not champion; its requests
    pending again) exits with CHECK_FAILED. One held back because the champion moved meanwhile
    passed every check: it exits 0 (the next batch takes its requests up, as designed)."""
    if isinstance(res, Registered) and not res.gates_passed:
        raise typer.Exit(code=ExitCode.CHECK_FAILED)


def print_summary(summary: RunSummary) -> None:
    rows = summary.methods
    kind = f"classes {summary.forget_classes}" if summary.forget_classes else "samples"
    t = Table(title=f"{summary.dataset}: forgetting {summary.forget} {kind} (percent)")
    cols = ["UA", "RA", "TA", "TA kept cl.", "MIA conf.", "MIA entr.", "avg gap", "seconds", "trainable"]
    t.add_column("method")
    for c in cols:
        t.add_column(c, justify="right")
    for name, r in rows.items():
        t.add_row(
            name,
            *(f"{v:.2f}" for v in (r.ua, r.ra, r.ta, r.ta_kept_classes, r.mia_confidence, r.mia_entropy)),
            f"{r.avg_gap:.2f}" if r.avg_gap is not None else "-",
            f"{r.seconds or 0:.1f}",
            f"{r.trainable_params or 0:,}",
        )
    out.print(t)
    out.print(
        f"RFAU trains {summary.rfau_trainable_params:,} of {summary.total_params:,} parameters "
        f"({100 * summary.rfau_trainable_share:.2f}%)"
    )
    reg = summary.registry
    if reg:
        verdict = (
            "gates passed: promoted to champion" if reg.gates_passed else "a gate failed: champion unchanged"
        )
        out.print(
            f"registry: {reg.model} version {reg.version} "
            f"({'new' if reg.new else 'already registered'}; "
            f"{verdict}); champion is version {reg.champion}"
        )
        for g in reg.gates:
            out.print(f"  gate {one_line(g)}")
