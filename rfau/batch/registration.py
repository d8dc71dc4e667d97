"""The register stage: a registry version, the ledger record, the request states."""

from __future__ import annotations

from pathlib import Path

from rfau.batch.common import BATCH, EVIDENCE, _now, _skip, read_batch
from rfau.batch.context import BatchContext
from rfau.batch.ladder import attempts_of, deadlines
from rfau.batch.recovery import _complete_promotion
from rfau.data.deadlines import FAILED_GATES
from rfau.data.request_store import RequestState, RequestStore
from rfau.data.split import read_split
from rfau.errors import RfauError
from rfau.faults import Fault, fault_point
from rfau.gates import Gates
from rfau.io import atomic_dir, claim_output
from rfau.models.card import read_card
from rfau.params import EXACT, BatchParams
from rfau.records import (
    BatchMeta,
    BatchMetrics,
    BatchRecord,
    Evaluation,
    GateReport,
    LedgerModel,
    RecordedBatch,
    Registered,
    Registration,
    Skipped,
    SummaryMetrics,
    UnlearnInfo,
    VersionRef,
)
from rfau.tracking import registry
from rfau.tracking.stage_runs import log_data_split, log_evaluate, log_rungs, log_unlearn
from rfau.tracking.tags import VersionTags
from rfau.tracking.versions import register as register_model

STAGE = "batch register"  # what its output folder is marked as written by


def _log_stages(reg, batch_dir: Path, model_dir: Path, eval_dir: Path, meta: BatchMeta) -> None:
    """The batch's stages as nested MLflow runs under the batch's parent run."""

    log_data_split(
        reg,
        batch_dir / "split",
        {"requests": meta.request_ids, "rejected": meta.rejected_ids},
        artifacts=[batch_dir / BATCH],
    )
    log_unlearn(reg, model_dir)
    log_evaluate(
        reg,
        BatchMetrics.read(eval_dir / "metrics.json").model_dump(exclude_none=True),
        artifacts=[eval_dir / f for f in (*EVIDENCE, "before.json", "after.json")],
    )
    log_rungs(reg, attempts_of(model_dir, eval_dir))  # the escalation ladder: one run per rung tried


def _append_record(
    ctx: BatchContext,
    meta: BatchMeta,
    reg: Registration,
    model_dir: Path,
    eval_dir: Path,
    held_back: str | None = None,
) -> RecordedBatch:
    """The batch's ledger record, anchored on the version it produced and logged to MLflow.
    ``held_back``: why a version that passed its gates is not promoted (recorded as such)."""

    trail, reqs, settings = ctx.trail, ctx.requests, ctx.settings
    unl = UnlearnInfo.read(model_dir / "unlearn.json")
    promoted = reg.gates_passed and not held_back
    requests = {rid: reqs.get(rid).request for rid in meta.request_ids}
    after, before = Evaluation.read(eval_dir / "after.json"), Evaluation.read(eval_dir / "before.json")
    base = meta.require_base()
    fields = BatchRecord(
        batch_id=meta.batch_id,
        request_ids=meta.request_ids,
        subject_hashes=trail.subject_hashes(list(requests.values())),
        rejected=meta.rejected_ids,
        forget_md5=meta.forget_md5,
        forget_count=meta.forget_count,
        forget_classes=meta.forget_classes,
        excluded_count=meta.excluded_count,
        dataset=meta.dataset,
        model=LedgerModel(
            name=settings.model_name,
            before=VersionRef(version=base.version, weights_sha256=base.weights_sha256),
            after=VersionRef(version=reg.version, weights_sha256=read_card(model_dir).weights_sha256),
        ),
        promoted=reg.gates_passed and not held_back,
        champion_after=reg.version if reg.gates_passed and not held_back else reg.champion,
        held_back=held_back,
        method=unl.method,
        config=unl.config,
        metrics=SummaryMetrics.of(after).model_dump(exclude_none=True),
        baseline_metrics=SummaryMetrics.of(before).model_dump(exclude_none=True),
        gates=GateReport.read(eval_dir / "gates.json").gates,
        gates_passed=reg.gates_passed,
        evidence=trail.keep_evidence(meta.batch_id, [eval_dir / f for f in EVIDENCE]),
        code_version=meta.code_version,
        started_at=meta.started_at,
        finished_at=_now(),
        mlflow_run_id=ctx.registry.active_run_id(),
        attempts=[a.model_dump() for a in attempts_of(model_dir, eval_dir)],
        exact=bool(promoted and unl.method == EXACT),
        deadlines=deadlines(
            meta, requests, bool(promoted), meta.deadline_days or BatchParams().deadline_days
        ),
    )
    # the claims again, under the store's lock, right before the record: an operator who released
    # a request while this batch ran gets it back pending, never "fulfilled" by this record
    with reqs.locked(f"batch {meta.batch_id} register"):
        _check_claims(reqs, meta, registered=reg.version)
        stored = trail.append(fields.model_dump(exclude={"held_back"} if held_back is None else set()))
    record = RecordedBatch.model_validate(stored)
    ctx.registry.set_version_tags(
        reg.version,
        {
            VersionTags.LEDGER_SEQ: record.seq,
            VersionTags.LEDGER_HASH: record.hash,
            VersionTags.BATCH_ID: meta.batch_id,
        },
    )
    trail.log_to_mlflow(stored)
    return record


def _champion_moved(ctx: BatchContext, meta: BatchMeta) -> str | None:
    """Why a version that passed its gates may still not become champion: the champion is no
    longer the version this batch started from (another batch promoted its own meanwhile, or an
    operator rolled back), so the new version still knows what the other batch forgot."""
    champ = ctx.registry.champion()
    if champ is None or meta.base is None or champ.version == meta.base.version:
        return None
    return (
        f"the champion moved from version {meta.base.version} (this batch's base) to "
        f"{champ.version} while the batch ran"
    )


class LostClaims(RfauError):
    """The batch no longer holds every request it claimed."""


def _check_claims(reqs: RequestStore, meta: BatchMeta, registered: int | None = None) -> None:
    """A batch registers only while it still holds every request it claimed: a batch whose
    requests were released (by an operator, a failure or the stale window) must not write a
    version or a ledger record for them."""
    lost = []
    for rid in meta.request_ids:
        st = reqs.get(rid)
        if st.batch_id != meta.batch_id or st.state not in (RequestState.IN_PROGRESS, RequestState.FULFILLED):
            lost.append(f"{rid} ({st.state.value}, batch {st.batch_id or '-'})")
    if lost:
        done = "nothing was registered" if registered is None else f"version {registered} is abandoned"
        raise LostClaims(
            f"batch {meta.batch_id} no longer holds its requests: {', '.join(lost)}; {done}, "
            "no ledger record written (run a new batch to forget them)"
        )


def _clear_rolled_back(reg, version: int) -> None:
    """A version rolled back by hand and then made again (the same weights) by a batch whose record
    promotes it: the record is newer than the rollback, so ``recover`` may promote it."""

    if reg.version(version).tags.get(VersionTags.ROLLED_BACK):
        reg.client.delete_model_version_tag(reg.name, str(version), VersionTags.ROLLED_BACK)


def _check_lineage(meta: BatchMeta, batch_dir: Path, model_dir: Path) -> None:
    """The model must have been made for this batch: its card names the batch's requests, its
    forget set and (for an unlearned model) the batch's base version's weights."""

    lineage = read_card(model_dir).lineage
    base, split = meta.require_base(), read_split(batch_dir / "split")
    wrong = []
    if sorted(lineage.get("request_ids", [])) != sorted(meta.request_ids):
        wrong.append(f"requests {lineage.get('request_ids', [])}, not the batch's {meta.request_ids}")
    if lineage.get("forget_sha256") != split.forget_hash:
        wrong.append("another forget set")
    parent = lineage.get("parent_weights_sha256")
    if (parent or lineage.get("kind") == "unlearned") and parent != base.weights_sha256:
        wrong.append(
            f"base weights {str(parent)[:12]}, not version {base.version}'s {base.weights_sha256[:12]}"
        )
    if wrong:
        raise RfauError(
            f"{model_dir} was not made for batch {meta.batch_id}: its card names {'; '.join(wrong)}; "
            "nothing was registered"
        )


def register(
    batch_dir: str | Path,
    model_dir: str | Path,
    eval_dir: str | Path,
    out_dir: str | Path,
    ctx: BatchContext | None = None,
    gates: Gates | None = None,
    kfp_run_id: str | None = None,
) -> Registered | Skipped:
    """New registry version (champion only when every gate passes) -> ledger record -> request
    states. Idempotent: registering a batch again returns its version and record. ``ctx``: the
    batch's (default: ``BatchContext.of_batch``). ``kfp_run_id``: the KFP run this batch is part
    of, tagged on its MLflow run and version. The verdict registered is the one evaluate wrote
    (gates.json); ``gates`` is not read again."""

    claim_output(out_dir, STAGE)  # before anything is registered or recorded
    meta = read_batch(batch_dir)
    ctx = ctx or BatchContext.of_batch(batch_dir)
    settings = ctx.settings
    if meta.empty:
        return _skip(Path(out_dir), meta, "registered.json", STAGE)
    model_dir, eval_dir = Path(model_dir), Path(eval_dir)
    reqs, trail = ctx.requests, ctx.trail
    found = trail.find_batch(meta.batch_id)
    record = RecordedBatch.model_validate(found) if found is not None else None
    if record is None:
        _check_claims(reqs, meta)
        _check_lineage(meta, Path(batch_dir), model_dir)

    # the batch (and the KFP run it belongs to) named on its MLflow run and on its version; the
    # base version: the new version's deletion frontier is its base's plus this batch's requests
    batch_tags = {
        VersionTags.BATCH_ID: meta.batch_id,
        VersionTags.BASE_VERSION: str(meta.require_base().version),
        **({VersionTags.KFP_RUN_ID: kfp_run_id} if kfp_run_id else {}),
    }

    def register_version(reg: registry.Registry) -> Registration:  # the alias moves once the record exists
        after, verdict = Evaluation.read(eval_dir / "after.json"), GateReport.read(eval_dir / "gates.json")
        return register_model(reg, model_dir, after, verdict, batch_tags, promote=False)

    if record is None:
        run_tags = {
            **batch_tags,
            "request_ids": ",".join(meta.request_ids),
            "forget_md5": meta.forget_md5,
            "base_model_version": meta.require_base().version,
            "code_version": meta.code_version,
        }
        # the batch's parent run; the stages' runs nest under it
        with ctx.registry.run(f"rfau-batch {meta.batch_id}", tags=run_tags, nested=False):
            _log_stages(ctx.registry, Path(batch_dir), model_dir, eval_dir, meta)
            reg = register_version(ctx.registry)
            fault_point(Fault.VERSION_CREATED)
            held_back = _champion_moved(ctx, meta)
            try:
                record = _append_record(ctx, meta, reg, model_dir, eval_dir, held_back)
            except LostClaims as e:
                ctx.registry.set_version_tags(reg.version, {VersionTags.ABANDONED: str(e)[:400]})
                raise
            if record.promoted and not reg.new:  # the same weights again, promoted by a newer record
                _clear_rolled_back(ctx.registry, reg.version)
    else:  # this stage ran before (a retry): the version and the record exist
        reg = register_version(ctx.registry)
    fault_point(Fault.RECORD_APPENDED)
    # the record is written before the alias moves, so the ledger never names a champion the
    # registry could not get to; a retry (or the next batch, see `recover`) completes the move
    _complete_promotion(ctx, record)
    champ = ctx.registry.champion()
    if champ is None:
        raise RfauError(
            f"model {settings.model_name!r} has no champion after registering batch {meta.batch_id}"
        )
    fault_point(Fault.PROMOTED)
    for rid in meta.request_ids:
        st = reqs.get(rid)
        if st.state is not RequestState.IN_PROGRESS or st.batch_id != meta.batch_id:
            continue  # already settled by an earlier run of this stage
        if record.promoted:  # what the ledger says, never a tag read back
            reqs.fulfil(
                rid,
                meta.batch_id,
                f"{settings.model_name} version {reg.version} (ledger record {record.seq})",
            )
        else:
            failed = [g.name for g in record.gates if not g.passed]
            why = record.held_back or f"version {reg.version} {FAILED_GATES} {failed}"
            if record.attempts and not record.held_back:  # the escalation ladder: every rung failed
                why = f"{len(record.attempts)} rung(s) tried, none passed; {why}"
            if meta.if_failed and not record.held_back:  # no rung left that could certify it
                reqs.needs_retrain(rid, meta.batch_id, f"{meta.if_failed}; {why}"[:1000])
                continue
            reqs.release(
                rid,
                meta.batch_id,
                f"{why}; the champion is unchanged and the request waits for the next batch",
            )
    out = Registered(
        batch_id=meta.batch_id,
        model=settings.model_name,
        version=reg.version,
        gates_passed=reg.gates_passed,
        promoted=record.promoted,
        champion=champ.version,
        mlflow_run_id=record.mlflow_run_id,
        ledger_seq=record.seq,
        ledger_hash=record.hash,
        request_ids=meta.request_ids,
    )
    with atomic_dir(out_dir, STAGE) as tmp:
        out.write(tmp / "registered.json")
    return out
