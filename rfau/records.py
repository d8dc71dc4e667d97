"""What the stages hand each other, typed: written with ``model_dump_json`` and read back with
``model_validate_json``. File names and keys on disk stay what dvc.yaml, the KFP components, the
README and the tests read (``batch.json``, ``unlearn.json``, ``metrics.json``, ``registered.json``,
``summary.json`` ...).

Every record here is written by rfau itself, so unknown keys are refused (``extra="forbid"``): a
key a producer adds without modelling it fails loudly where it is written, not silently where it
is read. The few mappings that stay free-form say why beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from rfau.errors import RfauError, validation_problems
from rfau.gates import GateResult
from rfau.io import write_text_atomic

Regime = Literal["class", "sample", "mixed", "none"]  # rfau.data.split.REGIMES


class Record(BaseModel):
    """A stage record on disk. NaN (an accuracy on an empty set) is written as ``NaN``, as
    ``json.dumps`` writes it, so that it reads back as a float."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
    omit_none: ClassVar[bool] = True  # None fields left off on disk (False: written as null)

    def write(self, path: str | Path) -> None:
        """Atomically: a reader sees the old file or the whole new one."""
        write_text_atomic(path, self.model_dump_json(indent=2, exclude_none=self.omit_none) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> Self:
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except OSError as e:
            raise RfauError(f"cannot read {path}: {e.strerror or e}") from None
        except ValidationError as e:
            raise RfauError(f"{path}: not a valid {cls.__name__}: {validation_problems(e)}") from None


# --- data-split ---------------------------------------------------------------------------------


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str
    reason: str


class BaseVersion(BaseModel):
    """The registered model a batch starts from (the champion when it began)."""

    model_config = ConfigDict(extra="forbid")

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


# --- unlearn ------------------------------------------------------------------------------------


class UnlearnInfo(Record):
    """unlearn.json: how a model was unlearned (method, settings, cost, per-epoch losses) and the
    facts the method reports about itself (``UnlearnMethod.info``)."""

    method: str
    # the method's own settings, as its config class (rfau.methods.*) validated and dumped them:
    # each method has other settings, so the record keeps them as that class's dump
    config: dict[str, Any]
    seconds: float
    trainable_params: int
    total_params: int
    trainable_share: float
    forget_sha256: str
    request_ids: list[str]
    # one row per epoch: "epoch" and the method's logged loss terms (names differ per method)
    history: list[dict[str, float]] | None = None
    # rfau: where the adapters sit and how the forget set was split between the two regimes
    target_modules: list[str] | None = None
    taps: list[str] | None = None
    forget_classwise: int | None = None
    forget_samplewise: int | None = None
    retain_budget: int | None = None
    cached_prefix_stages: int | None = None
    unseen_reference: int | None = None  # class-wise forget samples the original never saw, held out
    stopped_after_epochs: int | None = None  # epochs trained when the early stop (unseen_stop) ended it
    forget_loss_cap: float | None = None  # neggrad
    salient_params: int | None = None  # salun
    dampened_params: int | None = None  # ssd
    reference_samples: int | None = None  # ssd
    dampened_share_per_tensor: dict[str, float] | None = None  # ssd, by parameter name

    regime: Regime | None = None  # what the split asks for (rfau.data.split.forget_regime)


# --- evaluate -----------------------------------------------------------------------------------


class Counts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retain: int
    forget: int
    test: int


class Evaluation(Record):
    """One model on one split (``rfau evaluate``, before.json / after.json of a batch): percent,
    AUCs in [0, 1]; the keys of ``rfau.metrics.evaluate_model`` plus the weights it evaluated.
    None: not defined for this split (e.g. no forgotten class); written as null."""

    omit_none: ClassVar[bool] = False

    regime: Regime  # from the split (rfau.data.split.forget_regime): which gates apply
    ua: float
    forget_accuracy_forgotten_classes: float | None = None  # the class-wise gate's own
    ra: float
    ta: float
    ta_kept_classes: float
    ta_forgotten_classes: float | None = None
    ta_forget_sample_classes: float | None = None
    per_class_test_accuracy: dict[str, float]  # by the dataset's class names
    forget_confidence_mean: float | None = None
    test_confidence_mean: float
    counts: Counts
    # the evidence (rfau.metrics.evidence.EVIDENCE_KEYS)
    forget_vs_unseen_auc: float | None = None
    forget_vs_unseen_auc_cv_std: float | None = None
    forget_vs_unseen_n: int | None = None
    forget_vs_test_auc: float | None = None
    forget_vs_test_auc_cv_std: float | None = None
    forget_vs_test_n: int | None = None
    forget_member_rate_at_10fpr: float | None = None
    forget_member_rate_at_10fpr_test: float | None = None
    forget_member_rate_at_10fpr_std: float | None = None
    forget_member_rate_at_10fpr_test_std: float | None = None
    relearn_steps: int | None = None
    relearn_target_acc: float | None = None
    probe_forgotten_class_acc: float | None = None
    # classes forgotten whole: trained vs unseen images of those classes
    # (rfau.metrics.classwise.CLASSWISE_KEYS); None where not measurable
    forgotten_class_unseen_n: int | None = None
    forgotten_class_trained_vs_unseen_auc: float | None = None
    forgotten_class_trained_vs_unseen_auc_cv_std: float | None = None
    forgotten_class_trained_vs_unseen_auc_n: int | None = None
    forgotten_class_trained_vs_test_auc: float | None = None
    forgotten_class_trained_vs_test_auc_cv_std: float | None = None
    forgotten_class_trained_vs_test_auc_n: int | None = None
    forgotten_class_member_rate_at_10fpr: float | None = None
    forgotten_class_member_rate_at_10fpr_std: float | None = None
    forgotten_class_member_rate_at_10fpr_n: int | None = None
    forgotten_class_member_rate_at_10fpr_test: float | None = None
    forgotten_class_member_rate_at_10fpr_test_std: float | None = None
    forgotten_class_member_rate_at_10fpr_test_n: int | None = None
    # MIA-efficacy (rfau.metrics.mia.FEATURES): on the forget set, the test set, and the samples
    # earlier batches forgot (only when there are any)
    mia_confidence: float
    mia_confidence_test: float
    mia_entropy: float
    mia_entropy_test: float
    ua_excluded: float | None = None
    mia_confidence_excluded: float | None = None
    mia_entropy_excluded: float | None = None
    model_weights_sha256: str | None = None
    # a mixed split: the sample-wise evidence of its scattered samples alone (the same keys as
    # rfau.metrics.evidence plus ua and the MIA), gated like a sample-wise request
    sample_part: dict[str, Any] | None = None


class SummaryMetrics(BaseModel):
    """The metrics of a model a batch reports, logs and writes into its ledger record (percent)."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    ua: float
    ra: float
    ta: float
    ta_kept_classes: float
    mia_confidence: float
    mia_confidence_test: float
    ua_excluded: float | None = None
    mia_confidence_excluded: float | None = None
    # the per-sample evidence the gates read (rfau.metrics.evidence)
    ta_forgotten_classes: float | None = None
    forget_vs_unseen_auc: float | None = None
    forget_vs_test_auc: float | None = None
    forget_member_rate_at_10fpr: float | None = None
    probe_forgotten_class_acc: float | None = None
    forgotten_class_trained_vs_unseen_auc: float | None = None
    forgotten_class_trained_vs_test_auc: float | None = None
    forgotten_class_member_rate_at_10fpr: float | None = None

    @classmethod
    def of(cls, ev: Evaluation) -> SummaryMetrics:
        return cls.model_validate(ev.model_dump(include=set(cls.model_fields)))


class BatchMetrics(SummaryMetrics, Record):
    """A batch's metrics.json: flat, for ``dvc metrics`` and KFP's Metrics; the champion's values
    (the model the batch started from) under ``before_``."""

    before_ua: float
    before_ra: float
    before_ta: float
    before_ta_kept_classes: float
    before_mia_confidence: float
    before_mia_confidence_test: float
    before_ua_excluded: float | None = None
    before_mia_confidence_excluded: float | None = None
    before_ta_forgotten_classes: float | None = None
    before_forget_vs_unseen_auc: float | None = None
    before_forget_vs_test_auc: float | None = None
    before_forget_member_rate_at_10fpr: float | None = None
    before_probe_forgotten_class_acc: float | None = None
    before_forgotten_class_trained_vs_unseen_auc: float | None = None
    before_forgotten_class_trained_vs_test_auc: float | None = None
    before_forgotten_class_member_rate_at_10fpr: float | None = None
    gates_passed: bool
    forget_count: int
    unlearn_seconds: float

    @classmethod
    def build(
        cls, after: Evaluation, before: Evaluation, gates_passed: bool, forget_count: int, seconds: float
    ) -> BatchMetrics:
        now, then = SummaryMetrics.of(after), SummaryMetrics.of(before)
        return cls(
            **now.model_dump(),
            **{f"before_{k}": v for k, v in then.model_dump().items()},
            gates_passed=gates_passed,
            forget_count=forget_count,
            unlearn_seconds=seconds,
        )

    def numbers(self) -> dict[str, float]:
        """Every value as a number (flags as 0/1; undefined ones left out), for KFP's Metrics."""
        return {k: float(v) for k, v in self.model_dump(exclude_none=True).items()}


class GateReport(Record):
    """gates.json: the verdict of every gate on the new model."""

    regime: Regime
    passed: bool
    gates: list[GateResult]


class Confusion(Record):
    """confusion.json: the test-set confusion matrix (rows: true class), for KFP's ClassificationMetrics."""

    classes: list[str]
    matrix: list[list[int]]


class Prediction(BaseModel):
    """One row of test_predictions.json (DVC's confusion plot)."""

    model_config = ConfigDict(extra="forbid")

    actual: str
    predicted: str


# --- register -----------------------------------------------------------------------------------


class Registration(BaseModel):
    """What ``rfau.tracking.registry.register`` did: the version and its gates' verdict."""

    model_config = ConfigDict(extra="forbid")

    model: str
    version: int
    new: bool  # False: this model was registered before (same weights and forget set)
    champion: int | None
    gates_passed: bool
    gates: list[GateResult]


class VersionRef(BaseModel):
    """A registered version and the sha256 of its weights."""

    model_config = ConfigDict(extra="forbid")

    version: int
    weights_sha256: str


class LedgerModel(BaseModel):
    """A ledger record's model: the version before the batch (its base) and the one it made."""

    model_config = ConfigDict(extra="forbid")

    name: str
    before: VersionRef | None  # None: an operator move while no champion was set
    after: VersionRef


class BatchRecord(BaseModel):
    """The fields of a batch's audit-ledger record (the ledger adds seq, prev_hash, recorded_at
    and hash)."""

    model_config = ConfigDict(extra="forbid")

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


class RecordedBatch(BaseModel):
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


class ChampionMove(BaseModel):
    """What ``rfau promote`` / ``rfau rollback`` did to the champion alias."""

    model_config = ConfigDict(extra="forbid")

    model: str
    champion: int
    rolled_back: int | None = None  # rollback: the version that lost the alias
    reopened: list[str] = []  # fulfilled requests the new champion holds data of, back to pending
    ledger_seq: int | None = None  # the ledger record of the move (None: the store has no ledger)


class VersionRow(BaseModel):
    """One registered version as ``rfau models`` lists it (its ``rfau.*`` tags; None where a
    version lacks the tag)."""

    model_config = ConfigDict(extra="forbid")

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


# --- a whole batch, a whole experiment ------------------------------------------------------------


class BatchOutcome(BaseModel):
    """What ``rfau.batch.run_batch`` returns: the requests it took, and (unless there was nothing
    to forget) its metrics and the version it registered."""

    model_config = ConfigDict(extra="forbid")

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
