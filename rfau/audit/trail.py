"""The ledger where it lives: the object store holds the authoritative copy (pods of a cluster
share nothing else), a local mirror is kept in the state directory, and every record is also
anchored in the registry (the version it produced carries the record's seq and hash).

Appending takes a sequence slot first: ``audit/records/<seq>.json`` is created exclusively, so
two batches finishing at once cannot both write record N; the loser fails and can be re-run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from rfau.audit import consistency
from rfau.audit.ledger import (
    RESERVED,
    Ledger,
    canonical,
    load_or_create_salt,
    parse_records,
    subject_hash,
    verify_bytes,
)
from rfau.audit.salt import require_shared_salt
from rfau.data.request_store import RequestState, RequestStore
from rfau.errors import RfauError, UnknownRequestError
from rfau.models.card import read_card
from rfau.storage import NotFound, Store, open_store
from rfau.tracking import registry
from rfau.tracking.registry import Registry
from rfau.tracking.settings import TrackingSettings
from rfau.tracking.tags import VersionTags

LEDGER_KEY = "audit/ledger.jsonl"


class AuditTrail:
    def __init__(
        self, store: Store, settings: TrackingSettings, registry: Callable[[], Registry] | None = None
    ):
        self.store = store
        self.settings = settings
        self.local_dir = settings.state_dir / "audit"
        self.mirror = self.local_dir / "ledger.jsonl"
        # the registry its writes log to: a caller's kept one (a batch's), else one per use
        self._registry = registry or (lambda: Registry(self.settings))

    @classmethod
    def open(
        cls,
        store_uri: str,
        settings: TrackingSettings | None = None,
        registry: Callable[[], Registry] | None = None,
    ) -> AuditTrail:
        return cls(open_store(store_uri), settings or TrackingSettings.from_env(), registry)

    # --- reading ---------------------------------------------------------------------------------
    def ledger_bytes(self) -> bytes:
        try:
            return self.store.get_bytes(LEDGER_KEY)
        except NotFound:
            return b""

    def records(self) -> list[dict]:
        return parse_records(self.ledger_bytes(), f"{self.store.uri}/{LEDGER_KEY}")

    def find_batch(self, batch_id: str) -> dict | None:
        return next((r for r in self.records() if r.get("batch_id") == batch_id), None)

    def find_request(self, request_id: str) -> list[dict]:
        return [r for r in self.records() if request_id in r.get("request_ids", [])]

    # --- writing ---------------------------------------------------------------------------------
    def salt(self) -> bytes:
        """$RFAU_AUDIT_SALT (a cluster secret) or a salt file created once in the state folder
        (refused in a pod or on a remote store: rfau.audit.salt)."""
        env = os.environ.get("RFAU_AUDIT_SALT")
        if env:
            return env.encode()
        require_shared_salt(self.store.uri)
        return load_or_create_salt(self.local_dir / "salt")

    def subject_hashes(self, requests) -> dict[str, str]:
        salt = self.salt()
        return {r.request_id: subject_hash(r.subject or r.request_id, salt) for r in requests}

    def keep_evidence(self, batch_id: str, files: list[Path]) -> dict[str, str]:
        """Copy the evaluation evidence next to the ledger (store + local) -> {name: sha256}."""
        out = {}
        for f in files:
            if f.is_file():
                data = f.read_bytes()
                self.store.put_bytes(f"audit/evidence/{batch_id}/{f.name}", data)
                local = self.local_dir / "evidence" / batch_id / f.name
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
                out[f.name] = hashlib.sha256(data).hexdigest()  # the bytes just copied
        return out

    def evidence_dir(self, batch_id: str) -> Path:
        """The batch's evidence folder, fetched from the store when the local copy is missing."""
        local = self.local_dir / "evidence" / batch_id
        if not local.is_dir():
            for key in self.store.list(f"audit/evidence/{batch_id}/"):
                target = self.local_dir / key.removeprefix("audit/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.store.get_bytes(key))
        return local

    def append(self, fields: dict) -> dict:
        current = self._complete_interrupted(self.ledger_bytes())
        problems = verify_bytes(current)
        if problems:
            raise RfauError(
                f"the audit ledger at {self.store.uri}/{LEDGER_KEY} fails verification; "
                f"nothing appended: {problems[0]}"
            )
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "ledger.jsonl"
            p.write_bytes(current)
            record = Ledger(p).append(fields)
            data = p.read_bytes()
        # the slot first: of two batches appending at once, one gets AlreadyExists and retries
        self.store.put_bytes(f"audit/records/{record['seq']:06d}.json", canonical(record), exclusive=True)
        self.store.put_bytes(LEDGER_KEY, data)
        self._mirror(data)
        return record

    def _complete_interrupted(self, current: bytes) -> bytes:
        """A writer that died between taking slot N and writing the ledger left a valid record in
        the slot that the ledger lacks; it extends the chain exactly, so finish that append."""
        n = current.count(b"\n")
        key = f"audit/records/{n + 1:06d}.json"
        try:
            slot = self.store.get_bytes(key)
        except NotFound:
            return current
        fixed = current + slot + b"\n"
        if verify_bytes(fixed):
            raise RfauError(
                f"{self.store.uri}/{key} holds a record that does not extend the ledger; "
                "run `rfau audit verify` and resolve it by hand"
            )
        recovered = self._recovered(parse_records(slot)[0], current)
        if recovered is not None:
            fixed = recovered
            self.store.put_bytes(key, fixed.splitlines(keepends=True)[-1].rstrip(b"\n"))
        self.store.put_bytes(LEDGER_KEY, fixed)
        self._mirror(fixed)
        return fixed

    def _recovered(self, record: dict, current: bytes) -> bytes | None:
        """A slot left by a batch that is over (none of its requests is still in progress for it:
        it failed and released them, or they went stale) is appended as a recovered record that
        says so and was never promoted -> the new ledger bytes. None: its batch still holds its
        requests and settles them as its record says (appended as written)."""

        after = (record.get("model") or {}).get("after") or {}
        if after.get("version") is None:
            return None
        reqs = RequestStore(self.store)
        for rid in record.get("request_ids", []):
            try:
                st = reqs.get(rid)
            except UnknownRequestError:
                continue
            if st.state is RequestState.IN_PROGRESS and st.batch_id == record.get("batch_id"):
                return None
        champ = self._registry().champion()
        abandoned = "its requests were released"
        fields = {k: v for k, v in record.items() if k not in RESERVED}
        fields |= {
            "promoted": False,
            "champion_after": champ.version if champ else None,
            "recovered": f"appended by a later batch: batch {record.get('batch_id')} failed after taking "
            f"record slot {record.get('seq')} ({abandoned}); version {after['version']} was never promoted",
        }
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "ledger.jsonl"
            p.write_bytes(current)
            Ledger(p).append(fields)
            return p.read_bytes()

    def _mirror(self, data: bytes) -> None:
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.mirror.with_name(".ledger.jsonl.tmp")
        tmp.write_bytes(data)
        tmp.replace(self.mirror)

    def log_to_mlflow(self, record: dict) -> None:
        """The record and the whole ledger as artifacts of an ``audit`` run."""
        self._registry().log_files(
            "audit",
            tags={
                VersionTags.BATCH_ID: record["batch_id"],
                VersionTags.LEDGER_SEQ: record["seq"],
                VersionTags.LEDGER_HASH: record["hash"],
            },
            dicts={f"ledger/record-{record['seq']:06d}.json": record},
            files={"ledger": self.mirror},
        )

    # --- verifying -------------------------------------------------------------------------------
    def verify(self, check_weights: bool = True) -> list[str]:
        """Every problem found: the chain itself, the local mirror, the per-record objects, the
        registry's anchors, and the weights of every version the ledger names."""

        data = self.ledger_bytes()
        s = self.settings  # no local registry and an empty ledger: nothing to create just to look
        exists = s.registry_exists() or bool(data)
        reg = registry.Registry(s) if exists else None  # one connection for the whole audit
        tags = reg.version_tags() if reg else {}
        anchors = [
            {"seq": int(t[VersionTags.LEDGER_SEQ]), "hash": t[VersionTags.LEDGER_HASH]}
            for t in tags.values()
            if VersionTags.LEDGER_SEQ in t
        ]
        problems = verify_bytes(data, anchors)
        self.notes: list[str] = []
        if self.mirror.exists() and self.mirror.read_bytes() != data:
            problems.append(f"the local copy {self.mirror} differs from the object store's {LEDGER_KEY}")
        elif data and not self.mirror.exists():
            missing = f"the local copy {self.mirror} of the ledger is missing"
            if "://" in self.store.uri:  # a remote store: this machine may never have appended
                self.notes.append(f"{missing}; only the object store's copy was verified")
            else:  # a local store keeps its mirror beside it: a missing one was deleted
                problems.append(missing)
        if problems:
            return problems
        records = parse_records(data)
        champ = reg.champion() if reg else None
        problems += registry_problems(records, tags, champ.model_dump() if champ else None)
        problems += self._state_problems(records, tags, reg, champ.version if champ else None)
        slots = self.store.list("audit/records/")
        if len(slots) != len(records):
            problems.append(
                f"{len(slots)} record objects under audit/records/ but {len(records)} ledger records"
            )
        fetched: set[int] = set()
        for r in records:
            key = f"audit/records/{r['seq']:06d}.json"
            try:
                if self.store.get_bytes(key) != canonical(r):
                    problems.append(f"record {r['seq']}: {key} differs from the ledger line")
            except NotFound:
                problems.append(f"record {r['seq']}: {key} is missing")
            after = r.get("model", {}).get("after", {})
            if not after or after.get("version") is None:
                continue
            v = int(after["version"])
            t = tags.get(v)
            if t is None:
                problems.append(f"record {r['seq']}: registry version {v} no longer exists")
                continue
            if t.get(VersionTags.WEIGHTS) != after["weights_sha256"]:
                problems.append(f"record {r['seq']}: version {v}'s weights tag differs from the ledger")
            if check_weights and reg is not None and v not in fetched:
                fetched.add(v)
                with tempfile.TemporaryDirectory() as d:
                    try:
                        got = read_card(reg.fetch_version(v, Path(d) / "m")).weights_sha256
                    except RfauError as e:
                        problems.append(f"record {r['seq']}: version {v}: {e}")
                        continue
                if got != after["weights_sha256"]:
                    problems.append(
                        f"record {r['seq']}: version {v}'s weights hash {got[:12]} "
                        f"is not the ledger's {after['weights_sha256'][:12]}"
                    )
        return problems

    def _state_problems(self, records: list[dict], tags: dict, reg, champion: int | None) -> list[str]:
        """Requests against records, evidence files, the frontier of every served alias, and a
        promotion the registry does not show yet (rfau.audit.consistency)."""

        statuses = RequestStore(self.store).list()
        fulfilled = [st.request_id for st in statuses if st.state is RequestState.FULFILLED]
        problems = consistency.request_problems(records, statuses)
        for r in records:
            problems += consistency.evidence_problems(r, self.store, self.local_dir)
        problems += consistency.alias_problems(reg.aliases() if reg else {}, tags, fulfilled)
        problems += consistency.promotion_problems(records, tags, champion)
        return problems


def registry_problems(records: list[dict], tags: dict[int, dict], champion: dict | None) -> list[str]:
    """The registry side of the audit: every version is the bootstrap original, a version a
    ledger record names, a failed candidate with its reason, or one marked abandoned (a batch that
    failed after registering); no version claims passed gates without a record; the champion is
    the original or a version a record says was promoted."""
    named = {int(r["model"]["after"]["version"]) for r in records if r.get("model", {}).get("after")}
    promoted = {int(r["model"]["after"]["version"]) for r in records if r.get("promoted")}
    problems = []
    for v, t in sorted(tags.items()):
        if v in named or t.get(VersionTags.REGIME) == "none" or t.get(VersionTags.ABANDONED):
            continue
        if t.get(VersionTags.GATES_PASSED) == "false" and t.get(VersionTags.GATE_FAILURES, "none") != "none":
            continue
        if t.get(VersionTags.GATES_PASSED) == "true":
            problems.append(f"registry version {v} claims it passed its gates but no ledger record names it")
        else:
            problems.append(
                f"registry version {v} is in no ledger record and is no failed candidate (orphan)"
            )
    if champion is not None:
        v = int(champion["version"])
        if v not in promoted and tags.get(v, {}).get(VersionTags.REGIME) != "none":
            problems.append(f"champion version {v} is neither the original nor a version the ledger promoted")
    return problems
