"""What the stages hand each other, typed: written with ``model_dump_json`` and read back with
``model_validate_json``. File names and keys on disk stay what dvc.yaml, the KFP components, the
README and the tests read (``batch.json``, ``unlearn.json``, ``metrics.json``, ``registered.json``,
``summary.json`` ...).

One module per stage (split, unlearn, evaluation, register, runs), every record on one strict
base (``base.StrictModel``: unknown keys refused); the few mappings that stay free-form say why
beside them. The package is the import path: ``from rfau.records import Evaluation``.
"""

from __future__ import annotations

from rfau.data.split import Regime
from rfau.records.base import Record, StrictModel
from rfau.records.evaluation import (
    BatchMetrics,
    Confusion,
    Counts,
    Evaluation,
    ForgetCount,
    GateReport,
    GateResult,
    Prediction,
    SamplePart,
    SummaryMetrics,
)
from rfau.records.register import (
    BatchRecord,
    ChampionMove,
    LedgerModel,
    RecordedBatch,
    Registered,
    Registration,
    VersionRef,
    VersionRow,
)
from rfau.records.runs import BatchOutcome, MethodRow, RunRegistration, RunSummary
from rfau.records.split import BaseVersion, BatchMeta, Rejection, Skipped
from rfau.records.unlearn import UnlearnInfo

__all__ = [
    "BaseVersion",
    "BatchMeta",
    "BatchMetrics",
    "BatchOutcome",
    "BatchRecord",
    "ChampionMove",
    "Confusion",
    "Counts",
    "Evaluation",
    "ForgetCount",
    "GateReport",
    "GateResult",
    "LedgerModel",
    "MethodRow",
    "Prediction",
    "Record",
    "RecordedBatch",
    "Regime",
    "Registered",
    "Registration",
    "Rejection",
    "RunRegistration",
    "RunSummary",
    "SamplePart",
    "Skipped",
    "StrictModel",
    "SummaryMetrics",
    "UnlearnInfo",
    "VersionRef",
    "VersionRow",
]
