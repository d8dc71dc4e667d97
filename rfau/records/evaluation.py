"""What the evaluate stage hands on: one model's evaluation on a split (before.json, after.json),
a batch's metrics (metrics.json), the gates' verdict (gates.json) and the confusion records."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, SerializerFunctionWrapHandler, model_serializer, model_validator

from rfau.data.split import Regime
from rfau.records.base import Record, StrictModel


class Counts(StrictModel):
    retain: int
    forget: int
    test: int


class ForgetCount(StrictModel):
    forget: int


class SampleEvidence(StrictModel):
    """The sample-wise evidence (rfau.metrics.evidence.EVIDENCE_KEYS): the forget set against
    unseen and test samples, AUCs with their cross-validated spread and sizes, member rates at 10%
    FPR with their binomial spread. None: not measurable here."""

    forget_vs_unseen_auc: float | None = None
    forget_vs_unseen_auc_cv_std: float | None = None
    forget_vs_unseen_n: int | None = None
    forget_vs_test_auc: float | None = None
    forget_vs_test_auc_cv_std: float | None = None
    forget_vs_test_n: int | None = None
    forget_member_rate_at_10fpr: float | None = None
    forget_member_rate_at_10fpr_std: float | None = None
    forget_member_rate_at_10fpr_test: float | None = None
    forget_member_rate_at_10fpr_test_std: float | None = None


class SamplePart(SampleEvidence):
    """A mixed split's scattered samples alone (``sample_part`` of its evaluation): their UA, the
    MIA on them and on the kept classes' test samples, and the sample-wise evidence, gated like a
    sample-wise request."""

    ua: float
    mia_confidence: float
    mia_confidence_test: float  # what "looks unseen" scores: the kept classes' test samples
    counts: ForgetCount


class Evaluation(Record, SampleEvidence):
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
    # the rest of the evidence (rfau.metrics.evidence.EVIDENCE_KEYS; the sample-wise keys come
    # from SampleEvidence)
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
    sample_part: SamplePart | None = None


class SummaryMetrics(StrictModel):
    """The metrics of a model a batch reports, logs and writes into its ledger record (percent)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

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


class BatchMetrics(Record):
    """A batch's metrics: the new model's (``after``) and those of the champion it started from
    (``before``). Written, logged and dumped flat, as ``flat()`` gives them: for ``dvc metrics``
    and KFP's Metrics, the new model's under their own names and the champion's under ``before_``
    (and read back from that shape)."""

    after: SummaryMetrics
    before: SummaryMetrics
    gates_passed: bool
    forget_count: int
    unlearn_seconds: float

    @classmethod
    def build(
        cls, after: Evaluation, before: Evaluation, gates_passed: bool, forget_count: int, seconds: float
    ) -> BatchMetrics:
        return cls(
            after=SummaryMetrics.of(after),
            before=SummaryMetrics.of(before),
            gates_passed=gates_passed,
            forget_count=forget_count,
            unlearn_seconds=seconds,
        )

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        """The flat shape (metrics.json) -> after / before."""
        if not isinstance(data, dict) or "after" in data or "before" in data:
            return data
        names = SummaryMetrics.model_fields
        before = {k.removeprefix(_BEFORE): v for k, v in data.items() if k.startswith(_BEFORE)}
        after = {k: v for k, v in data.items() if k in names}
        rest = {k: v for k, v in data.items() if k not in names and not k.startswith(_BEFORE)}
        return {"after": after, "before": before, **rest}

    @model_serializer(mode="wrap")
    def _flatten(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        nested = handler(self)
        after, before = nested.pop("after"), nested.pop("before")
        return {**after, **{_BEFORE + k: v for k, v in before.items()}, **nested}

    def flat(self) -> dict[str, float | int | bool]:
        """metrics.json's keys: the new model's, the champion's under ``before_``, the verdict,
        the forget set's size and the unlearning time (undefined values left out)."""
        return self.model_dump(exclude_none=True)

    def numbers(self) -> dict[str, float]:
        """Every value as a number (flags as 0/1; undefined ones left out), for KFP's Metrics."""
        return {k: float(v) for k, v in self.flat().items()}


_BEFORE = "before_"


class GateResult(StrictModel):
    """One gate's verdict on a model (``rfau.gates.check_gates``)."""

    name: str
    passed: bool
    value: float | None = None  # None: not measurable (see ``measurable``)
    bound: float | None = None
    detail: str
    reason: str = ""  # one line: the metric, its value, the bound and what it means
    # False: too little data to measure it; the result does not block, and says why
    measurable: bool = True
    # evidence gates: samples per side and the smallest value this test could have detected at
    # that size (alpha 0.05, power 0.8; rfau.power), so a small proof is read as one
    n: int | None = None
    detectable: float | None = None


class GateReport(Record):
    """gates.json: the verdict of every gate on the new model, and the bounds it was judged by."""

    regime: Regime
    passed: bool
    gates: list[GateResult]
    # the bounds (rfau.gates.Gates, dumped); None: an original (nothing gated), or a file
    # written before they were kept
    settings: dict[str, float | bool] | None = None

    @classmethod
    def original(cls) -> GateReport:
        """The verdict of an original model: nothing forgotten, so nothing gated (the bootstrap)."""
        return cls(regime="none", passed=True, gates=[])

    @property
    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]


class Confusion(Record):
    """confusion.json: the test-set confusion matrix (rows: true class), for KFP's ClassificationMetrics."""

    classes: list[str]
    matrix: list[list[int]]


class Prediction(StrictModel):
    """One row of test_predictions.json (DVC's confusion plot)."""

    actual: str
    predicted: str
