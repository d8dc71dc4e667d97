"""The whole batch in one process."""

from __future__ import annotations

from pathlib import Path

from rfau.batch.common import _release_or_say_so
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
    parameters (``rfau.params.BatchParams``: params.yaml, the pipeline's parameters)."""
    wd = Path(workdir)
    p = params or BatchParams()
    settings = settings or TrackingSettings.from_env()
    store = p.store or None
    reuse_dir(wd, RUN, is_batch_workdir)  # a user's folder is refused before anything is claimed
    # SIGTERM: the claims are released below and the error line says so
    with sigterm_raises("the batch"), work_lock(wd, holder="rfau batch run"):
        meta = data_split(
            wd / "batch",
            p.dataset,
            store,
            settings,
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
            reg = register(wd / "batch", model_dir, eval_dir, wd / "registered", settings, p.gates, store)
        except BaseException as e:
            reason = str(e) or type(e).__name__
            released: list[str] = []
            _release_or_say_so(e, lambda: released.extend(abort(wd / "batch", reason, settings)))
            if isinstance(e, Terminated):
                raise Terminated(
                    f"batch {meta.batch_id} stopped by SIGTERM; requests released (pending again): "
                    f"{', '.join(released) or 'none'}"
                ) from None
            raise
    if not isinstance(metrics, BatchMetrics) or not isinstance(reg, Registered):
        raise RfauError(f"batch {meta.batch_id}: a stage skipped a batch that has something to forget")
    return taken.model_copy(update={"metrics": metrics, "registered": reg})
