"""What the register stage and the registry commands hand on: a registration, the ledger
record's fields, registered.json, and the champion moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError

from rfau.errors import RfauError
from rfau.records.base import Record, StrictModel
from rfau.records.evaluation import GateResult
from rfau.records.split import Skipped


class Registration(StrictModel):
    """What ``rfau.tracking.versions.register`` did: the version and its gates' verdict."""

    model: str
    version: int
    new: bool  # False: this model was registered before (same weights and forget set)
    champion: int | None
    gates_passed: bool
    gates: list[GateResult]


class VersionRef(StrictModel):
    """A registered version and the sha256 of its weights."""

    version: int
    weights_sha256: str


class LedgerModel(StrictModel):
    """A ledger record's model: the version before the batch (its base) and the one it made."""

    name: str
    before: VersionRef | None  # None: an operator move while no champion was set
    after: VersionRef


class BatchRecord(StrictModel):
    """The fields of a batch's audit-ledger record (the ledger adds seq, prev_hash, recorded_at
    and hash)."""

    batch_id: str
    request_ids: list[str]
    subject_hashes: dict[str, str]  # request id -> salted hash of its subject
    rejected: list[str]
    forget_md5: str | None
    forget_count: int | None
    forget_classes: list[str] | None
    excluded_count: int | None
    dataset: str
    model: LedgerModel
    promoted: bool
    champion_after: int | None
    held_back: str | None = None  # why a version that passed its gates was not promoted
    method: str
    config: dict[str, Any]  # UnlearnInfo.config: the method's own settings
    metrics: dict[str, float]  # SummaryMetrics of the new model, undefined ones left out
    baseline_metrics: dict[str, float]  # the same of the base model
    gates: list[GateResult]
    gates_passed: bool
    evidence: dict[str, str]  # evidence file name -> sha256
    code_version: str
    started_at: str
    finished_at: str
    mlflow_run_id: str | None
    # the escalation ladder: every rung tried ({"rung", "method", "config", "seconds",
    # "gates_passed", "failed_gates", "why"}), whether the promoted model is the exact (retrained)
    # one, and per request its due date and whether this batch met it
    attempts: list[dict[str, Any]] = []
    exact: bool = False
    deadlines: dict[str, dict[str, Any]] = {}


class RecordedBatch(StrictModel):
    """What a batch reads back from a ledger record. The ledger keeps records written by every
    rfau version for good, so only the keys read here are required; the rest are ignored."""

    model_config = ConfigDict(extra="ignore")

    seq: int
    hash: str
    batch_id: str
    promoted: bool = False
    held_back: str | None = None
    kind: str | None = None  # None: a deletion batch; "champion-move", "already-forgotten"
    request_ids: list[str] = []
    mlflow_run_id: str | None = None
    model: LedgerModel | None = None
    gates: list[GateResult] = []
    attempts: list[dict[str, Any]] = []  # records before the escalation ladder have none
    exact: bool = False

    @property
    def version(self) -> int:
        """The version the batch registered."""
        if self.model is None:
            raise RfauError(f"ledger record {self.seq} names no model version")
        return self.model.after.version


class ChampionMove(StrictModel):
    """What ``rfau promote`` / ``rfau rollback`` did to the champion alias."""

    model: str
    champion: int
    rolled_back: int | None = None  # rollback: the version that lost the alias
    reopened: list[str] = []  # fulfilled requests the new champion holds data of, back to pending
    ledger_seq: int | None = None  # the ledger record of the move (None: the store has no ledger)


class VersionRow(StrictModel):
    """One registered version as ``rfau models`` lists it (its ``rfau.*`` tags; None where a
    version lacks the tag)."""

    version: int
    aliases: list[str]
    gates_passed: bool | None  # the tag's "true"/"false" as a JSON boolean; None: no verdict (bootstrap)
    gate_failures: str | None
    method: str | None
    requests: str | None
    created: int | None  # ms since the epoch


class Registered(Record):
    """registered.json: the version a batch registered, its verdict and its ledger record."""

    batch_id: str
    model: str
    version: int
    gates_passed: bool
    promoted: bool  # False also when it passed but the champion moved meanwhile (held back)
    champion: int
    ledger_seq: int
    ledger_hash: str
    request_ids: list[str]
    mlflow_run_id: str | None = None  # the batch's parent run (rfau-batch BATCH_ID)

    @classmethod
    def read_or_skipped(cls, path: str | Path) -> Registered | Skipped:
        """registered.json, or the marker an empty batch's register stage wrote in its place."""
        try:
            return Skipped.model_validate_json(Path(path).read_bytes())
        except (OSError, ValidationError):
            return cls.read(path)  # the error, if any, names what a registered.json lacks
