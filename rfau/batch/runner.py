"""The whole batch in one process."""

from __future__ import annotations

from pathlib import Path

from rfau.batch.context import BatchContext
from rfau.batch.ladder import climb, rungs_of
from rfau.batch.recovery import abort
from rfau.batch.registration import register
from rfau.batch.splitting import data_split
from rfau.errors import RfauError, Terminated
from rfau.faults import Fault, fault_point
from rfau.io import reuse_dir, work_lock
from rfau.params import BatchParams
from rfau.records import BatchMetrics, BatchOutcome, Registered
from rfau.signals import sigterm_raises
from rfau.tracking.settings import TrackingSettings

RUN = "batch run"  # what its work folder is marked as written by


def is_batch_workdir(folder: Path) -> bool:
    """A work folder of `rfau batch run` from before output folders were marked (its lock file
    names the command)."""
    lock = folder / ".rfau-lock"
    try:
        return lock.is_file() and "rfau batch run" in lock.read_text()
    except OSError:
        return False


def run_batch(
    workdir: str | Path, params: BatchParams | None = None, settings: TrackingSettings | None = None
) -> BatchOutcome:
    """The four stages in order in this process (what the KFP pipeline runs as tasks: unlearn and
    evaluate once per rung of the escalation ladder until one passes), with the batch's
    parameters (``rfau.params.BatchParams``: params.yaml, the pipeline's parameters). One
    ``BatchContext`` (registry, request store, ledger) serves every stage."""
    wd = Path(workdir)
    p = params or BatchParams()
    ctx = BatchContext.open(p.store or None, settings)
    reuse_dir(wd, RUN, is_batch_workdir)  # a user's folder is refused before anything is claimed
    # SIGTERM: the claims are released below and the error line says so
    with sigterm_raises("the batch"), work_lock(wd, holder="rfau batch run"):
        meta = data_split(
            wd / "batch",
            p.dataset,
            ctx,
            p.holdout_fraction,
            p.train,
            base_model_uri=p.base_model_uri,
            params=p,
        )
        taken = BatchOutcome(
            batch_id=meta.batch_id,
            request_ids=meta.request_ids,
            rejected=meta.rejected,
            deferred=meta.deferred,
        )
        if meta.empty:
            return taken
        try:
            # the escalation ladder: each rung from the same base and split, until one passes
            model_dir, eval_dir = climb(wd / "batch", wd, rungs_of(meta, p), p.gates)
            fault_point(Fault.UNLEARNED)
            metrics = BatchMetrics.read(eval_dir / "metrics.json")
            reg = register(wd / "batch", model_dir, eval_dir, wd / "registered", ctx, p.gates)
        except BaseException as e:
            # the claims go back to pending; when that fails too, the error names this failure first
            released = abort(wd / "batch", str(e) or type(e).__name__, ctx)
            if isinstance(e, Terminated):
                raise Terminated(
                    f"batch {meta.batch_id} stopped by SIGTERM; requests released (pending again): "
                    f"{', '.join(released) or 'none'}"
                ) from None
            raise
    if not isinstance(metrics, BatchMetrics) or not isinstance(reg, Registered):
        raise RfauError(f"batch {meta.batch_id}: a stage skipped a batch that has something to forget")
    return taken.model_copy(update={"metrics": metrics, "registered": reg})
