"""What the data-split stage hands on: batch.json and the skip marker of an empty batch."""

from __future__ import annotations

from typing import Any, Literal

from rfau.errors import RfauError
from rfau.records.base import Record, StrictModel


class Rejection(StrictModel):
    request_id: str
    reason: str


class BaseVersion(StrictModel):
    """The registered model a batch starts from (the champion when it began)."""

    model: str
    version: int
    weights_sha256: str


class BatchMeta(Record):
    """batch.json: the requests a batch took, its forget set and its base model."""

    batch_id: str
    dataset: str
    dataset_uri: str
    store: str
    model: str
    started_at: str
    code_version: str
    request_ids: list[str]
    rejected: list[Rejection]
    deferred: list[Rejection] = []  # valid, but not admissible together with earlier ones: still pending
    empty: bool = True
    prior_request_ids: list[str] | None = None
    forget_count: int | None = None
    forget_classes: list[str] | None = None
    excluded_count: int | None = None
    forget_md5: str | None = None
    base: BaseVersion | None = None
    already_forgotten: bool | None = None
    # the escalation ladder (rfau.batch.ladder): the rungs this batch climbs, in order, each
    # {"rung": position on the ladder (1-based), "method", "config"}; None: the one `method`
    plan: list[dict[str, Any]] | None = None
    exact_only: str | None = None  # why the batch goes straight to the exact rung
    if_failed: str | None = None  # why its requests need retraining should every rung fail
    deadline_days: int | None = None  # the batch's default (a request may carry its own)

    @property
    def rejected_ids(self) -> list[str]:
        return [r.request_id for r in self.rejected]

    def skip_reason(self) -> str:
        if self.plan == [] and self.if_failed:
            return f"no rung can certify it: {self.if_failed}"
        return "no pending requests" if not self.request_ids else "nothing left to forget"

    def require_base(self) -> BaseVersion:
        """The base model of a batch that has something to forget."""
        if self.base is None:
            raise RfauError(f"batch {self.batch_id} has no base model (is it an empty batch?)")
        return self.base


class Skipped(Record):
    """What each later stage of an empty batch writes instead of its output (unlearn.json,
    metrics.json, registered.json)."""

    skipped: Literal[True] = True
    batch_id: str
    reason: str
