"""The data-split stage: claim the pending requests, split, stage the base model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import rfau
from rfau.batch.base_model import ensure_base, staged_base_model
from rfau.batch.common import BATCH, _now, _release_or_say_so, new_batch_id
from rfau.batch.recovery import _abandon_orphans, recover
from rfau.data.datasets import ImageDataset, load_dataset
from rfau.data.request_store import RequestState, RequestStore, default_store
from rfau.data.request_store import stale_after_hours as stale_window
from rfau.data.requests import resolve_forget_set
from rfau.data.split import HOLDOUT_FRACTION, admit_requests, make_split, write_split
from rfau.errors import RfauError
from rfau.io import atomic_dir, claim_output, md5_file, write_json
from rfau.records import BatchMeta, Rejection
from rfau.tracking.settings import TrackingSettings

STAGE = "batch split"  # what its output folder is marked as written by


def requested_samples(
    store: RequestStore, ds: ImageDataset, states: set[RequestState]
) -> tuple[list[str], list[str]]:
    """(sample ids, request ids) of every request in ``states``; the fulfilled ones' samples stay
    out of all later retain sets."""
    ids: set[str] = set()
    rids = []
    for st in store.list():
        if st.state in states:
            ids.update(resolve_forget_set([(f"request {st.request_id}", st.request)], ds)[0])
            rids.append(st.request_id)
    return sorted(ids), rids


def _release_stale(store: RequestStore, hours: float) -> None:
    """Requests left in progress by a batch that died (a killed pod) go back to pending."""
    now = datetime.now(UTC)
    for st in store.list(RequestState.IN_PROGRESS):
        age = (now - datetime.fromisoformat(st.updated_at)).total_seconds() / 3600
        if age > hours:
            store.release(st.request_id, st.batch_id, f"batch {st.batch_id} did not finish within {hours} h")


def data_split(
    out_dir: str | Path,
    dataset: str = "digits",
    store: str | None = None,
    settings: TrackingSettings | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    train: dict | None = None,
    batch_id: str | None = None,
    stale_after_hours: float | None = None,
    base_model_uri: str = "",
) -> BatchMeta:
    """Claim the pending requests -> ``out_dir`` with batch.json, requests/, split/ and base/.
    ``base_model_uri``: the user's own model, the bootstrap champion where the registry has none
    (checked before anything is claimed, see ``staged_base_model``)."""
    claim_output(out_dir, STAGE)  # before anything is claimed
    settings = settings or TrackingSettings.from_env()
    ds = load_dataset(dataset)
    uri = store or default_store(settings)
    reqs = RequestStore.open(uri)  # a store never initialised is a misconfiguration, not "nothing to do"
    recover(uri, settings)  # finish what a crashed register left half done before claiming more
    with staged_base_model(base_model_uri, ds, settings, holdout_fraction) as original:
        claim = Claim(dataset, uri, reqs, holdout_fraction, train, original)
        return _claim_and_split(Path(out_dir), ds, claim, settings, batch_id, stale_after_hours)


@dataclass(frozen=True)
class Claim:
    """What a data-split claims from and splits with (``original``: an imported bootstrap)."""

    dataset: str
    store_uri: str
    reqs: RequestStore
    holdout_fraction: float
    train: dict | None
    original: Path | None


def _claim_and_split(
    out_dir: Path,
    ds: ImageDataset,
    claim: Claim,
    settings: TrackingSettings,
    batch_id: str | None,
    stale_after_hours: float | None,
) -> BatchMeta:
    """data_split's claim, split and base model."""
    dataset, uri, reqs, holdout_fraction = claim.dataset, claim.store_uri, claim.reqs, claim.holdout_fraction
    batch_id = batch_id or new_batch_id()
    started = _now()
    _release_stale(reqs, stale_after_hours if stale_after_hours is not None else stale_window())
    with contextlib.suppress(RfauError):  # housekeeping: a registry that is down fails the batch below
        _abandon_orphans(settings, uri, reqs)
    claimed = reqs.claim_pending(batch_id)
    done: list = []
    try:
        excluded, prior = requested_samples(reqs, ds, {RequestState.FULFILLED})
        by_src = {f"request {st.request_id}": st for st in claimed}
        adm = admit_requests(
            ds, [(src, st.request) for src, st in by_src.items()], holdout_fraction, excluded
        )
        valid = [by_src[src] for src, _ in adm.admitted]
        rejected = [(by_src[src], why) for src, _, why in adm.rejected]
        deferred = [(by_src[src], why) for src, _, why in adm.deferred]
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
                        ds, tmp / "base", settings, claim.train, holdout_fraction, claim.original
                    )
                else:  # every named sample was forgotten by an earlier batch
                    done = valid
                    meta.already_forgotten = True
            meta.write(tmp / BATCH)
    except BaseException as e:
        why = f"batch {batch_id} failed in data-split: {e}"[:500]
        # nothing was decided: the requests wait for the next batch
        _release_or_say_so(e, lambda: [reqs.release(st.request_id, batch_id, why) for st in claimed])
        raise
    for st, why in rejected:
        reqs.reject(st.request_id, batch_id, why)
    for st, why in deferred:  # admissible later, once other requests have been forgotten
        reqs.release(st.request_id, batch_id, why[:500])
    for st in done:
        reqs.fulfil(st.request_id, batch_id, "already forgotten by an earlier batch")
    return meta
