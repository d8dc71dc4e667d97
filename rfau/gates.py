"""Promotion gates: the evidence a new model version must show before it becomes champion.

Pure functions over evaluation metrics (percent), no MLflow here. The regime decides what
"forgotten" means: class-wise, the forgotten classes are no longer recognised; sample-wise, the
forgotten samples look like unseen data (error rate and MIA score near the test set's), which
also catches over-forgetting. Both need the model to keep working on what stays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # rfau.records holds GateResult lists: imported for annotations only
    from rfau.records import SummaryMetrics


class Gates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_forget_accuracy_classwise: float = Field(5.0, ge=0, le=100)  # accuracy on forgotten classes
    max_forget_error_gap_samplewise: float = Field(5.0, ge=0)  # |forget error - test error|
    max_mia_gap_samplewise: float = Field(10.0, ge=0)  # |MIA on forget - MIA on test|
    max_retain_drop: float = Field(2.0, ge=0)  # RA drop vs the current champion, points
    max_test_drop: float = Field(2.0, ge=0)  # TA (on kept classes) drop vs the champion, points


class GateResult(BaseModel):
    name: str
    passed: bool
    value: float
    bound: float
    detail: str


def check_gates(
    metrics: SummaryMetrics, champion: SummaryMetrics | None, regime: str, gates: Gates
) -> list[GateResult]:
    """metrics: evaluation of the candidate on its split; champion: the current champion's
    evaluation on the same split (None for the first version: the drop gates are skipped)."""
    results = []

    def add(name: str, value: float, bound: float, detail: str) -> None:
        results.append(
            GateResult(name=name, passed=value <= bound, value=round(value, 4), bound=bound, detail=detail)
        )

    if regime == "class":
        add(
            "forget_accuracy",
            100.0 - metrics.ua,
            gates.max_forget_accuracy_classwise,
            "accuracy on the forgotten classes' training samples",
        )
    else:
        test_err = 100.0 - metrics.ta
        add(
            "forget_error_gap",
            abs(metrics.ua - test_err),
            gates.max_forget_error_gap_samplewise,
            f"|forget error {metrics.ua:.2f} - test error {test_err:.2f}|",
        )
        add(
            "mia_gap",
            abs(metrics.mia_confidence - metrics.mia_confidence_test),
            gates.max_mia_gap_samplewise,
            f"|MIA-efficacy {metrics.mia_confidence:.2f} - test set's {metrics.mia_confidence_test:.2f}|",
        )
    if champion is not None:
        add("retain_drop", champion.ra - metrics.ra, gates.max_retain_drop, "RA drop vs champion")
        add(
            "test_drop",
            champion.ta_kept_classes - metrics.ta_kept_classes,
            gates.max_test_drop,
            "TA (kept classes) drop vs champion",
        )
    return results
