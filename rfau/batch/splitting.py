"""The data-split stage: claim the pending requests, split, stage the base model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import rfau
from rfau.audit.kinds import ALREADY_FORGOTTEN
from rfau.batch.base_model import base_frontier, ensure_base, staged_base_model
from rfau.batch.common import BATCH, _now, new_batch_id
from rfau.batch.context import BatchContext
from rfau.batch.ladder import plan, retrain_refusal
from rfau.batch.recovery import _abandon_orphans, recover
from rfau.data.base import Dataset
from rfau.data.datasets import load_dataset
from rfau.data.deadlines import due_at, failed_batches
from rfau.data.request_store import RequestState, RequestStore
from rfau.data.requests import samples_of
from rfau.data.split import HOLDOUT_FRACTION, admit_requests, make_split, write_split
from rfau.errors import RfauError
from rfau.io import atomic_dir, claim_output, md5_file, write_json
from rfau.models.card import read_card
from rfau.params import EXACT, BatchParams
from rfau.records import BatchMeta, Rejection, VersionRef
from rfau.tracking.registry import frontier_value
from rfau.tracking.tags import VersionTags

STAGE = "batch split"  # what its output folder is marked as written by


def data_split(
    out_dir: str | Path,
    dataset: str = "digits",
    ctx: BatchContext | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    train: dict | None = None,
    batch_id: str | None = None,
    stale_after_hours: float | None = None,
    base_model_uri: str = "",
    params: BatchParams | None = None,
) -> BatchMeta:
    """Claim the pending requests -> ``out_dir`` with batch.json, requests/, split/ and base/.
    ``ctx``: the batch's store, registry and settings (default: the environment's).
    ``base_model_uri``: the user's own model, the bootstrap champion where the registry has none
    (checked before anything is claimed, see ``staged_base_model``). ``params``: the escalation
    ladder and the deadlines (the rungs this batch climbs are decided here, see ``rfau.batch.ladder``)."""
    claim_output(out_dir, STAGE)  # before anything is claimed
    ctx = ctx or BatchContext.open()
    ds = load_dataset(dataset)
    _ = ctx.requests  # opened first: a store never initialised is a misconfiguration, not "nothing to do"
    recover(ctx)  # finish what a crashed register left half done before claiming more
    with staged_base_model(base_model_uri, ds, ctx, holdout_fraction) as original:
        base, frontier = base_frontier(ctx)
        claim = Claim(
            dataset,
            holdout_fraction,
            train,
            original,
            params or BatchParams(),
            base,
            frozenset(frontier),
        )
        return _claim_and_split(Path(out_dir), ds, claim, ctx, batch_id, stale_after_hours)


@dataclass(frozen=True)
class Claim:
    """What a data-split claims from and splits with (``original``: an imported bootstrap)."""

    dataset: str
    holdout_fraction: float
    train: dict | None
    original: Path | None
    params: BatchParams
    base: VersionRef | None = None  # the champion the split is made for (None: bootstrap comes)
    frontier: frozenset[str] = frozenset()  # the requests whose data it no longer holds


def _claim_and_split(
    out_dir: Path,
    ds: Dataset,
    claim: Claim,
    ctx: BatchContext,
    batch_id: str | None,
    stale_after_hours: float | None,
) -> BatchMeta:
    """data_split's claim, split and base model."""
    dataset, reqs, holdout_fraction, settings = (
        claim.dataset,
        ctx.requests,
        claim.holdout_fraction,
        ctx.settings,
    )
    batch_id = batch_id or new_batch_id()
    started = _now()
    # requests left in progress by a batch that died (a killed pod) go back to pending
    reqs.release_stale(stale_after_hours, by_operator=False)
    with contextlib.suppress(RfauError):  # housekeeping: a registry that is down fails the batch below
        _abandon_orphans(ctx)
    _check_frontier(reqs, claim)
    claimed = reqs.claim_pending(batch_id)
    done: list = []
    try:
        # "already deleted" means: the base model's lineage excludes it (its deletion frontier),
        # not merely "some request is fulfilled" (a rollback can bring data back)
        excluded, prior = _frontier_samples(reqs, ds, claim.frontier)
        p = claim.params
        stuck, escalate = _stuck(claimed, p)
        by_src = {
            f"request {st.request_id}": st for st in [*stuck, *claimed] if st.request_id not in escalate
        }
        adm = admit_requests(
            ds, [(src, st.request) for src, st in by_src.items()], holdout_fraction, excluded
        )
        valid = [by_src[src] for src, _ in adm.admitted]
        rejected = [(by_src[src], why) for src, _, why in adm.rejected]
        deferred = [(by_src[src], why) for src, _, why in adm.deferred]
        if stuck and valid and valid[0] is stuck[0]:  # taken alone: it never drags others down again
            waits = (
                f"waits: request {stuck[0].request_id} is taken alone after failing {p.max_attempts} batches"
            )
            deferred += [(st, waits) for st in valid[1:]]
            valid = valid[:1]
        meta = BatchMeta(
            batch_id=batch_id,
            dataset=ds.name,
            dataset_uri=dataset,
            store=reqs.store.uri,
            model=settings.model_name,
            started_at=started,
            code_version=rfau.__version__,
            request_ids=[st.request_id for st in valid],
            rejected=[Rejection(request_id=st.request_id, reason=why) for st, why in rejected],
            deferred=[Rejection(request_id=st.request_id, reason=why) for st, why in deferred],
        )
        with atomic_dir(out_dir, STAGE) as tmp:
            if valid:
                split = make_split(
                    ds, [(f"request {st.request_id}", st.request) for st in valid], holdout_fraction, excluded
                )
                meta.prior_request_ids = prior
                meta.forget_count = len(split.forget)
                meta.forget_classes = split.forget_classes
                meta.excluded_count = len(split.excluded)
                if split.forget:
                    write_split(split, tmp / "split")
                    for st in valid:
                        write_json(
                            tmp / "requests" / f"{st.request_id}.json", st.request.model_dump(mode="json")
                        )
                    meta.empty = False
                    meta.forget_md5 = md5_file(tmp / "split" / "forget.txt")
                    meta.base = ensure_base(
                        ds,
                        tmp / "base",
                        ctx,
                        claim.train,
                        holdout_fraction,
                        claim.original,
                        claim.base.version if claim.base else None,
                    )
                    _plan_ladder(meta, tmp / "base", p, [st.request for st in valid], stuck)
                else:  # every named sample was forgotten by an earlier batch
                    done = valid
                    meta.already_forgotten = True
            meta.write(tmp / BATCH)
    except BaseException as e:
        why = f"batch {batch_id} failed in data-split: {e}"
        # nothing was decided: the requests wait for the next batch
        reqs.release_all([st.request_id for st in claimed], batch_id, e, why)
        raise
    for st, why in rejected:
        reqs.reject(st.request_id, batch_id, why)
    for st, why in deferred:  # admissible later, once other requests have been forgotten
        reqs.release(st.request_id, batch_id, why[:500])
    if done:
        _settle_already_forgotten(meta, done, claim, ctx)
    for rid, why in escalate.items():
        reqs.needs_retrain(rid, batch_id, why)
    if meta.plan == [] and meta.if_failed:  # nothing can certify it
        for rid in meta.request_ids:
            reqs.needs_retrain(rid, batch_id, meta.if_failed)
    return meta


def _stuck(claimed: list, p: BatchParams) -> tuple[list, dict]:
    """(the claimed requests that failed max_attempts batches, oldest first: the first is taken
    alone on the exact rung; {those that cannot be: the ladder has no exact rung -> why})."""

    stuck = [st for st in claimed if failed_batches(st) >= p.max_attempts]
    if EXACT in [r.method for r in p.ladder()]:
        return stuck, {}
    why = (
        f"failed {p.max_attempts} batches (max_attempts) and escalation "
        f"{[r.method for r in p.ladder()]} has no exact rung: add '{EXACT}' to escalation, then "
        "`rfau request requeue`"
    )
    return [], {st.request_id: why for st in stuck}


def _plan_ladder(meta: BatchMeta, base: Path, p: BatchParams, requests: list, stuck: list) -> None:
    """The rungs this batch climbs: straight to the exact one for a request due within
    retrain_lead_days or one that failed max_attempts batches; never retrain on a base model
    without a recipe (its requests then need retraining should every other rung fail)."""

    meta.deadline_days = p.deadline_days
    has_exact = EXACT in [r.method for r in p.ladder()]
    soon = datetime.now(UTC) + timedelta(days=p.retrain_lead_days)
    due = [r for r in requests if due_at(r, p.deadline_days) <= soon]
    if stuck and meta.request_ids == [stuck[0].request_id]:
        meta.exact_only = f"request {stuck[0].request_id} failed {p.max_attempts} batches (max_attempts)"
        meta.if_failed = f"{meta.exact_only} and the exact rung ({EXACT}) failed too"
    elif due and has_exact:
        meta.exact_only = (
            f"request {due[0].request_id} is due {due_at(due[0], p.deadline_days):%Y-%m-%d %H:%M} UTC, "
            f"within retrain_lead_days ({p.retrain_lead_days})"
        )
    refused = retrain_refusal(read_card(base)) if has_exact else None
    if refused:
        meta.if_failed = refused
        if meta.exact_only and stuck:  # nothing left to try: the batch skips its stages
            meta.plan, meta.empty = [], True
            return
        meta.exact_only = None
    meta.plan = plan(p, meta.exact_only, refused)


def _frontier_samples(reqs: RequestStore, ds: Dataset, frontier: frozenset[str]):
    """(sample ids, request ids) of the requests in the base model's frontier."""
    return samples_of([st for st in reqs.list() if st.request_id in frontier], ds)


def _check_frontier(reqs: RequestStore, claim: Claim) -> None:
    """A champion that holds data of a fulfilled request (an alias moved outside rfau) is not a
    base to build on: the batch stops before it claims, naming them and the way out."""
    held = sorted(
        st.request_id for st in reqs.list(RequestState.FULFILLED) if st.request_id not in claim.frontier
    )
    if held and claim.base is not None:
        raise RfauError(
            f"the champion (version {claim.base.version}) holds data of fulfilled request(s) "
            f"{', '.join(held)}; nothing was claimed: `rfau promote {claim.base.version} --reopen` re-queues "
            "them (recorded in the ledger), or promote a version that forgot them"
        )


def _settle_already_forgotten(meta: BatchMeta, done: list, claim: Claim, ctx: BatchContext) -> None:
    """Requests naming only samples the base model no longer holds: the base's frontier grows by
    them, one ledger record says so, and they are fulfilled naming it."""

    ids = [st.request_id for st in done]
    trail, base, settings = ctx.trail, claim.base, ctx.settings
    if base is None:  # no model yet has learned anything: nothing to record against
        raise RfauError(f"batch {meta.batch_id}: requests {ids} name no sample and there is no model")
    reg = ctx.registry
    reg.set_version_tags(
        base.version, {VersionTags.FRONTIER: frontier_value(reg.frontier(base.version) | set(ids))}
    )
    ref = base.model_dump()
    record = trail.append(
        {
            "kind": ALREADY_FORGOTTEN,
            "batch_id": meta.batch_id,
            "request_ids": ids,
            "subject_hashes": trail.subject_hashes([st.request for st in done]),
            "dataset": meta.dataset,
            "excluded_count": meta.excluded_count,
            "model": {"name": settings.model_name, "before": ref, "after": ref},
            "promoted": False,
            "champion_after": base.version,
            "code_version": meta.code_version,
            "started_at": meta.started_at,
            "finished_at": _now(),
        }
    )
    for rid in ids:
        ctx.requests.fulfil(
            rid,
            meta.batch_id,
            f"already forgotten: {settings.model_name} version {base.version} no longer holds its data "
            f"(ledger record {record['seq']})",
        )
