"""One scheduled deletion batch: the pipeline's four stages over the request store, the model
registry and the audit ledger.

    data-split -> unlearn -> evaluate -> register

Each stage is one function from folders to a folder; the KFP components, ``dvc.yaml`` (through
the CLI) and ``rfau batch run`` are thin drivers of these. A batch

- claims every pending request (pending -> in-progress), rejects the ones that fail validation
  with their reason, and unions the rest into one forget set;
- starts from the registry's current champion (training and registering an original model
  only where the registry has none), keeping every sample forgotten by earlier batches out of
  the retain and calibration sets;
- marks its requests fulfilled only after the register stage has committed a version that
  passed its gates; when a gate fails, the requests go back to pending with the reason.

With nothing pending, every stage writes a small "empty" marker and returns at once.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import rfau
from rfau.config import TrainConfig
from rfau.data.datasets import ImageDataset, load_dataset
from rfau.data.request_store import RequestState, RequestStore, default_store
from rfau.data.request_store import stale_after_hours as stale_window
from rfau.data.requests import resolve_forget_set
from rfau.data.split import HOLDOUT_FRACTION, admit_requests, make_split, read_split, write_split
from rfau.errors import RfauError
from rfau.faults import fault_point
from rfau.gates import Gates, check_gates, regime_of
from rfau.io import atomic_dir, md5_file, work_lock, write_json
from rfau.models.checkpoint import read_card
from rfau.params import BatchParams
from rfau.records import (
    BaseVersion,
    BatchMeta,
    BatchMetrics,
    BatchOutcome,
    BatchRecord,
    Evaluation,
    GateReport,
    LedgerModel,
    RecordedBatch,
    Registered,
    Registration,
    Rejection,
    Skipped,
    SummaryMetrics,
    UnlearnInfo,
    VersionRef,
)
from rfau.report import batch_report, confusion
from rfau.tracking.settings import TrackingSettings

BATCH = "batch.json"
EVIDENCE = ("metrics.json", "gates.json", "report.md", "confidence_hist.png")


def new_batch_id() -> str:
    return f"batch-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --- data-split ---------------------------------------------------------------------------------


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


def bootstrap(
    ds: ImageDataset,
    work_dir: Path,
    settings: TrackingSettings,
    train: dict | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    original: Path | None = None,
) -> Registration:
    """Register the original model as the bootstrap champion of a registry that has none:
    ``original`` when given, else one trained in ``work_dir`` (the dataset's preset recipe with
    ``train`` on top); its metrics on the empty split are its baseline. ``work_dir`` is removed."""
    from rfau.models.importer import weights_identity
    from rfau.stages import evaluate_stage, train_stage
    from rfau.tracking import registry

    model = original or work_dir / "model"
    if original is None:
        train_stage(
            ds, model, TrainConfig.preset(ds.kind, **(train or {})), holdout_fraction=holdout_fraction
        )
    write_split(make_split(ds, [], holdout_fraction), work_dir / "split")
    evaluate_stage(model, ds, work_dir / "split", work_dir / "metrics.json")
    # an imported model's version names what it was imported from: a later base_model_uri is
    # checked against it (see champion_lineage)
    source = read_card(model).lineage.get("source_sha256")
    tags = {"source_sha256": weights_identity(source)} if source else None
    reg = registry.register(model, work_dir / "metrics.json", settings, bootstrap=True, batch_tags=tags)
    shutil.rmtree(work_dir)
    return reg


def _has_registry(settings: TrackingSettings) -> bool:
    """Whether a registry exists to be read (a local one is not created just to look)."""
    return bool(settings.tracking_uri) or (settings.state_dir / "mlflow.db").is_file()


def champion_lineage(settings: TrackingSettings) -> tuple[VersionRef, list[str]] | None:
    """The champion and the sha256 of its lineage: its weights, each ancestor's back to the
    bootstrap version, and what that version was imported from. None: no champion."""
    from rfau.tracking import registry

    if not _has_registry(settings):
        return None
    champ = registry.champion(settings)
    if champ is None:
        return None
    tags = registry.version_tags(settings)
    by_weights = {t.get("rfau.weights_sha256"): v for v, t in tags.items()}
    chain: list[int] = []
    version: int | None = champ.version
    while version is not None and version not in chain:
        chain.append(version)
        parent = tags[version].get("rfau.parent_weights_sha256")
        version = by_weights.get(parent) if parent else None
    hashes = [tags[v].get("rfau.weights_sha256", "") for v in chain]
    source = _imported_from(settings, chain[-1], tags[chain[-1]])
    return champ, [h for h in (*hashes, source) if h]


def _imported_from(settings: TrackingSettings, version: int, tags: dict) -> str:
    """What a bootstrap version was imported from: its tag, or for a version registered before
    the tag existed, its model card's lineage."""
    import tempfile

    from rfau.models.importer import weights_identity
    from rfau.tracking import registry

    if tags.get("rfau.source_sha256"):
        return tags["rfau.source_sha256"]
    if tags.get("rfau.method") != "imported":
        return ""
    with tempfile.TemporaryDirectory(prefix="rfau-lineage-") as tmp:
        card = read_card(registry.fetch_version(settings, version, Path(tmp) / "model"))
    source = card.lineage.get("source_sha256")
    return weights_identity(source) if source else ""


@contextlib.contextmanager
def staged_base_model(
    uri: str, ds: ImageDataset, settings: TrackingSettings, holdout_fraction: float = HOLDOUT_FRACTION
) -> Iterator[Path | None]:
    """The model a base_model_uri names, checked before a batch claims anything: where the
    registry has no champion, imported (labels vs classes, safetensors only, a card with its
    sha256) into a temporary folder that the bootstrap registers; where it has one, the URI's
    weights must be in the champion's lineage (a champion is never replaced silently), and
    nothing is imported. Yields the imported folder, or None."""
    import tempfile

    from rfau.models.importer import fetch_model_folder, import_model_folder, model_identities

    if not uri:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="rfau-base-model-") as tmp:
        folder = fetch_model_folder(uri, Path(tmp) / "source")
        lineage = champion_lineage(settings)
        if lineage is not None:
            _check_in_lineage(uri, model_identities(folder), *lineage, settings)
            yield None
            return
        import_model_folder(folder, ds, Path(tmp) / "model", holdout_fraction, uri)
        yield Path(tmp) / "model"


def _check_in_lineage(
    uri: str, identities: set[str], champ: VersionRef, lineage: list[str], settings: TrackingSettings
) -> None:
    if identities & set(lineage):
        return
    given = ", ".join(sorted(identities)) or "no .safetensors weights"
    raise RfauError(
        f"base_model_uri {uri!r} (weights sha256 {given}) is not the model the registry's champion "
        f"comes from ({settings.model_name} version {champ.version}, weights sha256 "
        f"{champ.weights_sha256}, lineage back to sha256 {lineage[-1]}); a registry that has a "
        "champion never takes another base model: unset base_model_uri, or register your model "
        "under another RFAU_MODEL_NAME"
    )


def ensure_base(
    ds: ImageDataset,
    out_dir: Path,
    settings: TrackingSettings,
    train: dict | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    original: Path | None = None,
) -> BaseVersion:
    """The model this batch starts from: the registry's champion, downloaded into ``out_dir``.
    Where the registry has none (the first batch), ``original`` (an imported model), else one
    trained here, is registered as the bootstrap champion."""
    from rfau.tracking import registry

    reg = registry.Registry(settings)
    champ = reg.champion()
    if champ is None:
        work = out_dir.with_name(out_dir.name + ".bootstrap")
        bootstrap(ds, work, settings, train, holdout_fraction, original)
        champ = reg.champion()
    if champ is None:
        raise RfauError(f"the registry at {settings.redacted_uri()} has no champion after the bootstrap")
    reg.fetch_version(champ.version, out_dir)
    return BaseVersion(
        model=settings.model_name, version=champ.version, weights_sha256=read_card(out_dir).weights_sha256
    )


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
        with atomic_dir(out_dir) as tmp:
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


def _release_or_say_so(failure: BaseException, release) -> None:
    """Call ``release`` (put a failed batch's requests back); when that fails too (a full disk,
    an unreachable store) raise an RfauError that names the batch's own failure first."""
    try:
        release()
    except Exception as e:
        raise RfauError(
            f"{str(failure) or type(failure).__name__}; releasing its requests failed too "
            f"({str(e) or type(e).__name__}): they stay in progress until `rfau request release`"
        ) from failure


def read_batch(batch_dir: str | Path) -> BatchMeta:
    path = Path(batch_dir) / BATCH
    if not path.is_file():
        raise RfauError(
            f"{batch_dir} is not a batch folder ({BATCH} is missing); run the data-split stage first"
        )
    return BatchMeta.read(path)


def _skip(out_dir: Path, meta: BatchMeta, name: str) -> Skipped:
    info = Skipped(batch_id=meta.batch_id, reason=meta.skip_reason())
    with atomic_dir(out_dir) as tmp:
        info.write(tmp / name)
    return info


# --- unlearn ------------------------------------------------------------------------------------


def unlearn(
    batch_dir: str | Path, out_dir: str | Path, method: str = "rfau", config: dict | None = None
) -> UnlearnInfo | Skipped:
    """Forget the batch's forget set from its base model (the champion) -> model folder."""
    from rfau.stages import unlearn_stage

    meta = read_batch(batch_dir)
    if meta.empty:
        return _skip(Path(out_dir), meta, "unlearn.json")
    b = Path(batch_dir)
    return unlearn_stage(b / "base", meta.dataset_uri, b / "split", out_dir, method, config)


# --- evaluate -----------------------------------------------------------------------------------


def evaluate(
    batch_dir: str | Path,
    model_dir: str | Path,
    out_dir: str | Path,
    gates: Gates | None = None,
    seed: int = 0,
) -> BatchMetrics | Skipped:
    """The new model and the champion it came from, on the batch's split -> before.json,
    after.json, metrics.json (flat, for dvc metrics and KFP), gates.json, confusion.json,
    confidence_hist.png and report.md."""
    from rfau.metrics.plots import confidence_histogram
    from rfau.stages import evaluate_stage

    meta = read_batch(batch_dir)
    if meta.empty:
        return _skip(Path(out_dir), meta, "metrics.json")
    b, model_dir, gates = Path(batch_dir), Path(model_dir), gates or Gates()
    ds = load_dataset(meta.dataset_uri)
    split = read_split(b / "split")
    unl = UnlearnInfo.read(model_dir / "unlearn.json")
    with atomic_dir(out_dir) as tmp:
        after = evaluate_stage(model_dir, ds, b / "split", tmp / "after.json", seed)
        before = evaluate_stage(b / "base", ds, b / "split", tmp / "before.json", seed)
        regime = regime_of(after.model_dump())  # from the split (forget_regime), for every method
        results = check_gates(after.model_dump(), before.model_dump(), regime, gates)
        passed = all(r.passed for r in results)
        flat = BatchMetrics.build(after, before, passed, len(split.forget), unl.seconds)
        flat.write(tmp / "metrics.json")
        GateReport(regime=regime, passed=passed, gates=results).write(tmp / "gates.json")
        cm, rows = confusion(model_dir, ds, split)
        cm.write(tmp / "confusion.json")
        # for `dvc plots` (confusion template)
        write_json(tmp / "test_predictions.json", [r.model_dump() for r in rows])
        confidence_histogram(
            ds, split, {"before (champion)": b / "base", "after": model_dir}, tmp / "confidence_hist.png"
        )
        (tmp / "report.md").write_text(batch_report(meta, before, after, results))
    return flat


# --- register -----------------------------------------------------------------------------------


def _log_stages(reg, batch_dir: Path, model_dir: Path, eval_dir: Path, meta: BatchMeta) -> None:
    """The batch's stages as nested MLflow runs under the batch's parent run."""
    from rfau.tracking.stage_runs import log_data_split, log_evaluate, log_unlearn

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


def _append_record(
    trail,
    reqs: RequestStore,
    meta: BatchMeta,
    reg: Registration,
    model_dir: Path,
    eval_dir: Path,
    settings: TrackingSettings,
    held_back: str | None = None,
) -> RecordedBatch:
    """The batch's ledger record, anchored on the version it produced and logged to MLflow.
    ``held_back``: why a version that passed its gates is not promoted (recorded as such)."""
    from rfau.tracking import registry

    unl = UnlearnInfo.read(model_dir / "unlearn.json")
    after, before = Evaluation.read(eval_dir / "after.json"), Evaluation.read(eval_dir / "before.json")
    base = meta.require_base()
    fields = BatchRecord(
        batch_id=meta.batch_id,
        request_ids=meta.request_ids,
        subject_hashes=trail.subject_hashes([reqs.get(r).request for r in meta.request_ids]),
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
        mlflow_run_id=registry.Registry.active_run_id(),
    )
    stored = trail.append(fields.model_dump(exclude={"held_back"} if held_back is None else set()))
    record = RecordedBatch.model_validate(stored)
    registry.set_version_tags(
        settings,
        reg.version,
        {"ledger_seq": record.seq, "ledger_hash": record.hash, "batch_id": meta.batch_id},
    )
    trail.log_to_mlflow(stored)
    return record


def _champion_moved(settings: TrackingSettings, meta: BatchMeta) -> str | None:
    """Why a version that passed its gates may still not become champion: the champion is no
    longer the version this batch started from (another batch promoted its own meanwhile, or an
    operator rolled back), so the new version still knows what the other batch forgot."""
    from rfau.tracking import registry

    champ = registry.champion(settings)
    if champ is None or meta.base is None or champ.version == meta.base.version:
        return None
    return (
        f"the champion moved from version {meta.base.version} (this batch's base) to "
        f"{champ.version} while the batch ran"
    )


def _check_claims(reqs: RequestStore, meta: BatchMeta) -> None:
    """A batch registers only while it still holds every request it claimed: a batch whose
    requests were released (by an operator, a failure or the stale window) must not write a
    version or a ledger record for them."""
    lost = []
    for rid in meta.request_ids:
        st = reqs.get(rid)
        if st.batch_id != meta.batch_id or st.state not in (RequestState.IN_PROGRESS, RequestState.FULFILLED):
            lost.append(f"{rid} ({st.state.value}, batch {st.batch_id or '-'})")
    if lost:
        raise RfauError(
            f"batch {meta.batch_id} no longer holds its requests: {', '.join(lost)}; nothing was "
            "registered (run a new batch to forget them)"
        )


def _abandon_orphans(settings: TrackingSettings, uri: str, reqs: RequestStore) -> list[int]:
    """Versions whose batch failed before its ledger record while the registry was down (so the
    failing batch could not tag them abandoned itself): once none of their requests is claimed
    any more, that batch is over, and they are tagged abandoned here, so the audit tells them
    from a version that claims a deletion nobody recorded. A batch still in register holds its
    requests, so its version is never touched. -> the versions tagged."""
    from rfau.audit.trail import AuditTrail
    from rfau.tracking.registry import Registry

    if not settings.tracking_uri and not (settings.state_dir / "mlflow.db").is_file():
        return []  # no registry yet: nothing can be orphaned
    recorded = {r.batch_id for r in _batch_records(AuditTrail.open(uri, settings))}
    running = {st.batch_id for st in reqs.list(RequestState.IN_PROGRESS)}
    reg, tagged = Registry(settings), []
    for v in reg.versions():
        t, version = v.tags, int(v.version)
        batch = t.get("rfau.batch_id")  # set when a batch creates the version (not `rfau register`)
        if not batch or batch in recorded or batch in running or t.get("rfau.abandoned"):
            continue
        reg.set_version_tags(version, {"abandoned": "its batch ended without a ledger record (found later)"})
        tagged.append(version)
    return tagged


def _batch_records(trail) -> list[RecordedBatch]:
    """The ledger's batch records, as a batch reads them."""
    return [RecordedBatch.model_validate(r) for r in trail.records()]


def _complete_promotion(settings: TrackingSettings, trail, record: RecordedBatch) -> None:
    """Make the registry show what a ledger record claims: a promoted record that is the
    ledger's latest promotion owns the champion alias, unless the version was rolled back."""
    from rfau.tracking.registry import Registry

    if not record.promoted:
        return
    latest = [r for r in _batch_records(trail) if r.promoted][-1]
    if latest.seq != record.seq:
        return  # a later batch promoted its own version since
    version = record.version
    reg = Registry(settings)
    if reg.version(version).tags.get("rfau.rolled_back") == "true":
        return
    champ = reg.alias_version("champion")
    if champ is None or int(champ.version) != version:
        reg.move_champion(str(version))


def recover(store: str | None = None, settings: TrackingSettings | None = None) -> list[str]:
    """Finish what a crashed register left half done: the latest promoted ledger record gets
    its champion alias, and requests still in progress for a batch the ledger already records
    are settled as that record says. Returns what was done (run before every batch)."""
    from rfau.audit.trail import AuditTrail

    settings = settings or TrackingSettings.from_env()
    uri = store or default_store(settings)
    trail = AuditTrail.open(uri, settings)
    records = _batch_records(trail)
    done = []
    promoted = [r for r in records if r.promoted]
    if promoted:
        from rfau.tracking.registry import Registry

        before = Registry(settings).alias_version("champion")
        _complete_promotion(settings, trail, promoted[-1])
        after = Registry(settings).alias_version("champion")
        if (before and before.version) != (after and after.version):
            done.append(f"champion moved to version {after.version} as ledger record {promoted[-1].seq} says")
    by_batch = {r.batch_id: r for r in records}
    reqs = RequestStore.from_uri(uri)
    for st in reqs.list(RequestState.IN_PROGRESS):
        r = by_batch.get(st.batch_id or "")
        if r is None:
            continue
        if r.promoted:
            reqs.fulfil(
                st.request_id,
                r.batch_id,
                f"{settings.model_name} version {r.version} "
                f"(ledger record {r.seq}, completed after an interrupted register)",
            )
            done.append(f"request {st.request_id} fulfilled (ledger record {r.seq})")
        else:
            reqs.release(
                st.request_id,
                r.batch_id,
                f"version {r.version} failed its gates (ledger record "
                f"{r.seq}); the request waits for the next batch",
            )
            done.append(f"request {st.request_id} back to pending (ledger record {r.seq})")
    return done


def register(
    batch_dir: str | Path,
    model_dir: str | Path,
    eval_dir: str | Path,
    out_dir: str | Path,
    settings: TrackingSettings | None = None,
    gates: Gates | None = None,
    store: str | None = None,
    kfp_run_id: str | None = None,
) -> Registered | Skipped:
    """New registry version (champion only when every gate passes) -> ledger record -> request
    states. Idempotent: registering a batch again returns its version and record.
    ``kfp_run_id``: the KFP run this batch is part of, tagged on its MLflow run and version."""
    from rfau.audit.trail import AuditTrail
    from rfau.tracking import registry

    meta = read_batch(batch_dir)
    settings = settings or TrackingSettings.from_env()
    if meta.empty:
        return _skip(Path(out_dir), meta, "registered.json")
    model_dir, eval_dir, gates = Path(model_dir), Path(eval_dir), gates or Gates()
    reqs = RequestStore.from_uri(store or meta.store)
    trail = AuditTrail.open(store or meta.store, settings)
    found = trail.find_batch(meta.batch_id)
    record = RecordedBatch.model_validate(found) if found is not None else None
    if record is None:
        _check_claims(reqs, meta)

    # the batch (and the KFP run it belongs to) named on its MLflow run and on its version
    batch_tags = {"batch_id": meta.batch_id, **({"kfp_run_id": kfp_run_id} if kfp_run_id else {})}

    def register_version() -> Registration:  # the alias moves later, once the record exists
        after, before = eval_dir / "after.json", eval_dir / "before.json"
        return registry.register(
            model_dir, after, settings, gates, before, promote=False, batch_tags=batch_tags
        )

    if record is None:
        with registry.pipeline_run(
            settings,
            f"rfau-batch {meta.batch_id}",
            tags={
                **batch_tags,
                "request_ids": ",".join(meta.request_ids),
                "forget_md5": meta.forget_md5,
                "base_model_version": meta.require_base().version,
                "code_version": meta.code_version,
            },
        ) as run_registry:
            _log_stages(run_registry, Path(batch_dir), model_dir, eval_dir, meta)
            reg = register_version()
            fault_point("register:version-created")
            held_back = _champion_moved(settings, meta)
            record = _append_record(trail, reqs, meta, reg, model_dir, eval_dir, settings, held_back)
    else:  # this stage ran before (a retry): the version and the record exist
        reg = register_version()
    fault_point("register:record-appended")
    # the record is written before the alias moves, so the ledger never names a champion the
    # registry could not get to; a retry (or the next batch, see `recover`) completes the move
    _complete_promotion(settings, trail, record)
    champ = registry.champion(settings)
    if champ is None:
        raise RfauError(
            f"model {settings.model_name!r} has no champion after registering batch {meta.batch_id}"
        )
    fault_point("register:promoted")
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
            why = record.held_back or f"version {reg.version} failed gates {failed}"
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
    with atomic_dir(out_dir) as tmp:
        out.write(tmp / "registered.json")
    return out


def _recorded(meta: BatchMeta) -> bool:
    """Whether the ledger already has this batch's record (best effort: an unreadable store
    counts as no, and the requests are released as before)."""
    from rfau.audit.ledger import parse_records
    from rfau.audit.trail import LEDGER_KEY
    from rfau.storage import NotFound, open_store

    try:
        data = open_store(meta.store).get_bytes(LEDGER_KEY)
    except NotFound:
        return False
    except RfauError:
        return False
    return any(r.get("batch_id") == meta.batch_id for r in parse_records(data))


def _mark_abandoned(meta: BatchMeta, reason: str, settings: TrackingSettings | None) -> None:
    """A version this batch registered before it failed is tagged abandoned, so the audit can
    tell it from an orphan (best effort: the registry may be what failed)."""
    from rfau.tracking.registry import Registry

    settings = settings or TrackingSettings.from_env(model_name=meta.model)
    if not settings.tracking_uri and not (settings.state_dir / "mlflow.db").is_file():
        return  # no registry here at all: nothing can have been registered
    try:
        reg = Registry(settings)
        for v in reg.versions():  # the versions this batch created (tagged with its id at creation)
            if v.tags.get("rfau.batch_id") == meta.batch_id and not v.tags.get("rfau.ledger_seq"):
                reg.set_version_tags(int(v.version), {"abandoned": f"batch {meta.batch_id} failed: {reason}"})
    except RfauError:
        pass


def abort(batch_dir: str | Path, reason: str, settings: TrackingSettings | None = None) -> list[str]:
    """A batch that failed after data-split: its requests go back to pending at once (instead of
    waiting for the stale timeout) -> the ids released. ``settings``: the batch's registry (default:
    the environment's, as in a pipeline's exit task)."""
    path = Path(batch_dir) / BATCH
    if not path.is_file():
        return []
    meta = BatchMeta.read(path)
    reqs = RequestStore.from_uri(meta.store)
    if _recorded(meta):
        return []  # the ledger holds this batch: the next batch's `recover` settles its requests
    _mark_abandoned(meta, reason, settings)
    released = []
    for rid in meta.request_ids:
        st = reqs.get(rid)
        if st.state is RequestState.IN_PROGRESS and st.batch_id == meta.batch_id:
            reqs.release(rid, meta.batch_id, f"batch {meta.batch_id} failed: {reason}"[:500])
            released.append(rid)
    return released


# --- the whole batch in one process -------------------------------------------------------------


def run_batch(
    workdir: str | Path, params: BatchParams | None = None, settings: TrackingSettings | None = None
) -> BatchOutcome:
    """The four stages in order in this process (what the KFP pipeline runs as four tasks), with
    the batch's parameters (``rfau.params.BatchParams``: params.yaml, the pipeline's parameters)."""
    wd = Path(workdir)
    p = params or BatchParams()
    settings = settings or TrackingSettings.from_env()
    store = p.store or None
    wd.mkdir(parents=True, exist_ok=True)
    with work_lock(wd, holder="rfau batch run"):  # a second batch in this folder stops here, clearly
        meta = data_split(
            wd / "batch",
            p.dataset,
            store,
            settings,
            p.holdout_fraction,
            p.train,
            base_model_uri=p.base_model_uri,
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
            unlearn(wd / "batch", wd / "model", p.method, p.method_config)
            fault_point("unlearned")
            metrics = evaluate(wd / "batch", wd / "model", wd / "evaluation", p.gates)
            reg = register(
                wd / "batch", wd / "model", wd / "evaluation", wd / "registered", settings, p.gates, store
            )
        except BaseException as e:
            reason = str(e) or type(e).__name__
            _release_or_say_so(e, lambda: abort(wd / "batch", reason, settings))
            raise
    if not isinstance(metrics, BatchMetrics) or not isinstance(reg, Registered):
        raise RfauError(f"batch {meta.batch_id}: a stage skipped a batch that has something to forget")
    return taken.model_copy(update={"metrics": metrics, "registered": reg})


__all__ = [
    "data_split",
    "unlearn",
    "evaluate",
    "register",
    "abort",
    "run_batch",
    "read_batch",
    "default_store",
    "md5_file",
]
