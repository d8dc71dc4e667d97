"""What a whole batch returns and what ``rfau run`` writes (summary.json)."""

from __future__ import annotations

from typing import ClassVar

from rfau.records.base import Record, StrictModel
from rfau.records.evaluation import BatchMetrics, Evaluation
from rfau.records.register import Registered, Registration
from rfau.records.split import Rejection


class BatchOutcome(StrictModel):
    """What ``rfau.batch.run_batch`` returns: the requests it took, and (unless there was nothing
    to forget) its metrics and the version it registered."""

    batch_id: str
    request_ids: list[str]
    rejected: list[Rejection]
    deferred: list[Rejection] = []
    metrics: BatchMetrics | None = None
    registered: Registered | None = None

    @property
    def skipped(self) -> bool:
        return self.registered is None


class MethodRow(Evaluation):
    """One model of the experiment: its evaluation, its cost and its gap to retrain."""

    seconds: float | None = None  # None: the original (nothing was unlearned)
    trainable_params: int | None = None
    avg_gap: float | None = None  # None: no retrain column to compare with


class RunRegistration(Registration):
    """The experiment's registry entries: the original (bootstrap) and the RFAU version."""

    original_version: int


class RunSummary(Record):
    """summary.json of ``rfau run``: the forget set and one row per model."""

    omit_none: ClassVar[bool] = False

    dataset: str
    requests: list[str]
    forget: int
    forget_classes: list[str]
    rfau_trainable_params: int
    total_params: int
    rfau_trainable_share: float
    methods: dict[str, MethodRow]  # by model: original, rfau, retrain
    registry: RunRegistration | None = None
