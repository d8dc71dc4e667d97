"""The stage records: each method's own facts in unlearn.json (files written before they moved
out of the shared record still load and write back the same keys), a batch's metrics nested in
memory and flat on disk, and the gates' verdict with the bounds it was judged by."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rfau.errors import RfauError
from rfau.gates import Gates, check_gates
from rfau.methods.neggrad import NegGradPlusInfo
from rfau.methods.rfau.method import RFAUInfo
from rfau.methods.salun import SalUnInfo
from rfau.methods.ssd import SSDInfo
from rfau.records import BatchMetrics, Evaluation, GateReport, UnlearnInfo

SHARED = {
    "config": {"epochs": 2},
    "seconds": 1.5,
    "trainable_params": 10,
    "total_params": 100,
    "trainable_share": 0.1,
    "forget_sha256": "ab" * 32,
    "request_ids": ["r1"],
}
# unlearn.json files as rfau wrote them when the shared record held every method's fields
OLD_FILES = {
    "rfau": (
        RFAUInfo,
        {
            "method": "rfau",
            **SHARED,
            "history": [{"epoch": 0.0, "retain_loss": 0.5, "forget_loss": 1.25}],
            "target_modules": ["layer3.0.conv1", "fc"],
            "taps": ["layer3", "fc"],
            "forget_classwise": 30,
            "forget_samplewise": 0,
            "retain_budget": 2000,
            "cached_prefix_stages": 2,
            "unseen_reference": 4,
            "stopped_after_epochs": 1,
            "regime": "class",
        },
    ),
    "neggrad_plus": (
        NegGradPlusInfo,
        {"method": "neggrad_plus", **SHARED, "forget_loss_cap": 4.6, "regime": "sample"},
    ),
    "salun": (SalUnInfo, {"method": "salun", **SHARED, "salient_params": 12, "regime": "sample"}),
    "ssd": (
        SSDInfo,
        {
            "method": "ssd",
            **SHARED,
            "dampened_params": 7,
            "reference_samples": 500,
            "dampened_share_per_tensor": {"fc.weight": 0.25},
            "regime": "mixed",
        },
    ),
}


@pytest.mark.parametrize("method", list(OLD_FILES))
def test_an_unlearn_json_from_before_reads_and_writes_back_the_same_keys(tmp_path, method):
    model, old = OLD_FILES[method]
    path = tmp_path / "unlearn.json"
    path.write_text(json.dumps(old, indent=2))
    info = UnlearnInfo.read(path)
    assert info.method == method and info.regime == old["regime"] and info.seconds == 1.5
    facts = {k: v for k, v in old.items() if k not in UnlearnInfo.model_fields}
    assert info.details == facts  # the method's own facts, not fields of the shared record
    assert (
        model.model_validate(info.details).model_dump(exclude_none=True) == facts
    )  # its own model reads them
    info.write(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again == old and list(again) == list(old)  # the same keys, in the same order
    assert UnlearnInfo.read(tmp_path / "again.json") == info


def test_a_method_fact_must_be_declared_by_the_method():
    info = SalUnInfo()
    info.salient_params = 3
    assert info.facts() == {"salient_params": 3}
    with pytest.raises(ValidationError, match="salient_params"):
        info.salient_params = "many"  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="taps"):
        info.taps = ["fc"]  # type: ignore[attr-defined]  # RFAU's, not SalUn's
    with pytest.raises(ValidationError, match="both under 'details' and at the top level"):
        UnlearnInfo.model_validate({**OLD_FILES["salun"][1], "details": {"salient_params": 1}})


def _evaluation(**fields) -> Evaluation:
    base = {
        "regime": "sample",
        "ua": 3.0,
        "ra": 99.0,
        "ta": 97.5,
        "ta_kept_classes": 97.5,
        "per_class_test_accuracy": {"0": 97.5},
        "test_confidence_mean": 0.9,
        "counts": {"retain": 1000, "forget": 30, "test": 360},
        "mia_confidence": 4.0,
        "mia_confidence_test": 4.5,
        "mia_entropy": 4.0,
        "mia_entropy_test": 4.5,
        "forget_vs_unseen_auc": 0.56,
        "forget_vs_unseen_auc_cv_std": 0.05,
        "forget_vs_unseen_n": 30,
        "forget_vs_test_auc": 0.52,
        "forget_vs_test_auc_cv_std": 0.04,
        "forget_vs_test_n": 30,
        "forget_member_rate_at_10fpr": 12.0,
        "forget_member_rate_at_10fpr_std": 3.5,
        "forget_member_rate_at_10fpr_test": 9.0,
        "forget_member_rate_at_10fpr_test_std": 3.0,
    }
    return Evaluation.model_validate({**base, **fields})


def test_batch_metrics_are_after_and_before_in_memory_and_flat_on_disk(tmp_path):
    after, before = _evaluation(), _evaluation(ua=1.0, ra=99.5, forget_vs_unseen_auc=0.8)
    metrics = BatchMetrics.build(after, before, gates_passed=True, forget_count=30, seconds=2.5)
    assert metrics.after.ua == 3.0 and metrics.before.ua == 1.0 and metrics.before.ra == 99.5
    metrics.write(tmp_path / "metrics.json")
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    # today's keys for dvc metrics and KFP: the new model's, then the champion's under before_
    assert list(on_disk)[:3] == ["ua", "ra", "ta"] and on_disk["before_ua"] == 1.0
    assert on_disk["before_forget_vs_unseen_auc"] == 0.8 and "before_ua_excluded" not in on_disk
    assert list(on_disk)[-3:] == ["gates_passed", "forget_count", "unlearn_seconds"]
    assert not any(isinstance(v, dict) for v in on_disk.values())
    assert on_disk == metrics.flat() and BatchMetrics.read(tmp_path / "metrics.json") == metrics
    assert metrics.numbers()["gates_passed"] == 1.0 and metrics.numbers()["before_ra"] == 99.5
    (tmp_path / "bad.json").write_text(json.dumps({**on_disk, "before_nonsense": 1.0}))
    with pytest.raises(RfauError, match="not a valid BatchMetrics: before.nonsense"):
        BatchMetrics.read(tmp_path / "bad.json")


def test_the_verdict_keeps_its_bounds_and_an_older_gates_json_still_reads(tmp_path):
    gates = Gates(auc_tolerance=0.1)
    report = check_gates(_evaluation(), _evaluation(), gates)
    assert report.passed and report.regime == "sample" and report.failures == []
    assert report.settings is not None and report.settings["auc_tolerance"] == 0.1
    report.write(tmp_path / "gates.json")
    assert GateReport.read(tmp_path / "gates.json") == report
    old = {"regime": "sample", "passed": False, "gates": [g.model_dump() for g in report.gates[:1]]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert GateReport.read(tmp_path / "old.json").settings is None
    assert GateReport.original().regime == "none" and GateReport.original().passed
