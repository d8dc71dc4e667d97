"""Settling what a crashed or failed batch left: recovery from the ledger, orphans, abort."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rfau.audit.chain import parse_records
from rfau.audit.kinds import ALREADY_FORGOTTEN
from rfau.batch.common import BATCH, _batch_records
from rfau.batch.context import BatchContext
from rfau.data.request_store import RequestState
from rfau.errors import RfauError, Terminated, UsageError
from rfau.records import BatchMeta, RecordedBatch
from rfau.signals import sigterm_raises
from rfau.tracking.settings import TrackingSettings
from rfau.tracking.tags import VersionTags


def _abandon_orphans(ctx: BatchContext) -> list[int]:
    """Versions whose batch failed before its ledger record while the registry was down (so the
    failing batch could not tag them abandoned itself): once none of their requests is claimed
    any more, that batch is over, and they are tagged abandoned here, so the audit tells them
    from a version that claims a deletion nobody recorded. A batch still in register holds its
    requests, so its version is never touched. -> the versions tagged."""
    if not ctx.has_registry():
        return []  # no registry yet: nothing can be orphaned
    recorded = {r.batch_id for r in _batch_records(ctx.trail)}
    running = {st.batch_id for st in ctx.requests.list(RequestState.IN_PROGRESS)}
    reg, tagged = ctx.registry, []
    for v in reg.versions():
        t, version = v.tags, int(v.version)
        batch = t.get(VersionTags.BATCH_ID)  # set when a batch creates the version (not `rfau register`)
        if not batch or batch in recorded or batch in running or t.get(VersionTags.ABANDONED):
            continue
        reg.set_version_tags(
            version, {VersionTags.ABANDONED: "its batch ended without a ledger record (found later)"}
        )
        tagged.append(version)
    return tagged


def _complete_promotion(ctx: BatchContext, record: RecordedBatch) -> None:
    """Make the registry show what a ledger record claims: a promoted record that is the
    ledger's latest promotion owns the champion alias, unless the version was rolled back."""
    if not record.promoted:
        return
    latest = [r for r in _batch_records(ctx.trail) if r.promoted][-1]
    if latest.seq != record.seq:
        return  # a later batch promoted its own version since
    version = record.version
    reg = ctx.registry
    try:
        tags = reg.version(version).tags
    except UsageError:  # the version was deleted: nothing to serve; an operator move is recorded
        return
    if tags.get(VersionTags.ROLLED_BACK) == "true":
        return
    champ = reg.alias_version("champion")
    if champ is None or int(champ.version) != version:
        reg.move_champion(str(version))


def recover(ctx: BatchContext | None = None) -> list[str]:
    """Finish what a crashed register left half done: the latest promoted ledger record gets
    its champion alias, and requests still in progress for a batch the ledger already records
    are settled as that record says. Returns what was done (run before every batch)."""
    ctx = ctx or BatchContext.open()
    records = _batch_records(ctx.trail)
    done = []
    promoted = [r for r in records if r.promoted]
    if promoted:
        reg = ctx.registry
        before = reg.alias_version("champion")
        _complete_promotion(ctx, promoted[-1])
        after = reg.alias_version("champion")
        if (before and before.version) != (after and after.version):
            done.append(f"champion moved to version {after.version} as ledger record {promoted[-1].seq} says")
        elif promoted[-1].version not in reg.version_tags():
            done.append(
                f"ledger record {promoted[-1].seq} promotes version {promoted[-1].version}, which no longer "
                "exists: `rfau promote VERSION` (or rollback) chooses the champion and records it"
            )
    by_batch = {r.batch_id: r for r in records}
    reqs = ctx.requests
    for st in reqs.list(RequestState.IN_PROGRESS):
        r = by_batch.get(st.batch_id or "")
        if r is None:
            continue
        if r.kind == ALREADY_FORGOTTEN:
            reqs.fulfil(st.request_id, r.batch_id, f"already forgotten (ledger record {r.seq})")
            done.append(f"request {st.request_id} fulfilled (ledger record {r.seq})")
        elif r.promoted:
            reqs.fulfil(
                st.request_id,
                r.batch_id,
                f"{ctx.settings.model_name} version {r.version} "
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


def _recorded(meta: BatchMeta, ctx: BatchContext) -> bool:
    """Whether the ledger already has this batch's record (best effort: an unreadable store
    counts as no, and the requests are released as before)."""
    try:
        data = ctx.trail.ledger_bytes()  # a missing ledger: b""
    except RfauError:
        return False
    return any(r.get("batch_id") == meta.batch_id for r in parse_records(data))


def _mark_abandoned(meta: BatchMeta, reason: str, ctx: BatchContext) -> None:
    """A version this batch registered before it failed is tagged abandoned, so the audit can
    tell it from an orphan (best effort: the registry may be what failed)."""
    if not ctx.has_registry():
        return  # no registry here at all: nothing can have been registered
    try:
        reg = ctx.registry
        for v in reg.versions():  # the versions this batch created (tagged with its id at creation)
            if v.tags.get(VersionTags.BATCH_ID) == meta.batch_id and not v.tags.get(VersionTags.LEDGER_SEQ):
                reg.set_version_tags(
                    int(v.version), {VersionTags.ABANDONED: f"batch {meta.batch_id} failed: {reason}"}
                )
    except Exception:  # noqa: BLE001 - a full disk or a broken registry raises anything; the release goes on
        pass


def abort(batch_dir: str | Path, reason: str, ctx: BatchContext | None = None) -> list[str]:
    """A batch that failed after data-split: its requests go back to pending at once (instead of
    waiting for the stale timeout) -> the ids released; when that fails too, an RfauError names
    ``reason`` first. ``ctx``: the batch's (default: its folder's store and the environment's
    registry under the batch's model name, as in a pipeline's exit task)."""
    path = Path(batch_dir) / BATCH
    if not path.is_file():
        return []
    meta = BatchMeta.read(path)
    ctx = ctx or BatchContext(TrackingSettings.from_env(model_name=meta.model), meta.store)
    if _recorded(meta, ctx):
        return []  # the ledger holds this batch: the next batch's `recover` settles its requests
    _mark_abandoned(meta, reason, ctx)
    return ctx.requests.release_all(meta.request_ids, meta.batch_id, reason)


@contextmanager
def release_on_sigterm(batch_dir: str | Path, what: str) -> Iterator[None]:
    """A batch task after data-split (a KFP component, a local pipeline's task): on SIGTERM the
    batch's in-progress requests go back to pending at once (``abort``) and the error
    names them, instead of waiting for the exit task or the stale timeout."""
    try:
        with sigterm_raises(what):
            yield
    except Terminated as e:
        released = abort(batch_dir, str(e))
        raise Terminated(f"{e}; requests released (pending again): {', '.join(released) or 'none'}") from None
