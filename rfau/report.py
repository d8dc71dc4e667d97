"""What people and dashboards read about a batch: the test-set confusion matrix (KFP
ClassificationMetrics, DVC's confusion plot) and the Markdown report."""

from __future__ import annotations

from pathlib import Path

from rfau.data.base import Dataset
from rfau.data.split import Split
from rfau.models.checkpoint import load_checkpoint_for
from rfau.power import power_lines, verdict_cell
from rfau.records import BatchMeta, Confusion, Evaluation, GateResult, Prediction
from rfau.train import predict_logits


def confusion(model_dir: Path, ds: Dataset, split: Split) -> tuple[Confusion, list[Prediction]]:
    """Test-set confusion matrix (rows: true class) for KFP's ClassificationMetrics, and the
    per-sample (actual, predicted) rows DVC's confusion plot reads."""
    # sklearn here, not at the top: every batch stage imports this module, only evaluate needs it
    from sklearn.metrics import confusion_matrix

    model, _, ds = load_checkpoint_for(model_dir, ds)  # model families: a text model's tokens
    idx = ds.indices(split.test)
    actual = ds.y[idx].tolist()
    predicted = predict_logits(model, ds.x[idx]).argmax(1).tolist()
    matrix = confusion_matrix(actual, predicted, labels=list(range(len(ds.classes))))
    rows = [Prediction(actual=ds.classes[t], predicted=ds.classes[p]) for t, p in zip(actual, predicted)]
    return Confusion(classes=list(ds.classes), matrix=matrix.tolist()), rows


def batch_report(meta: BatchMeta, before: Evaluation, after: Evaluation, results: list[GateResult]) -> str:
    """The Markdown report: requests, forget set, base, metrics before and after, gate verdicts."""
    rows = [
        ("UA: error on the forget set", "ua"),
        ("RA: accuracy on retained data", "ra"),
        ("TA: test accuracy", "ta"),
        ("TA on kept classes", "ta_kept_classes"),
        ("MIA-efficacy on the forget set", "mia_confidence"),
        ("MIA-efficacy on the test set", "mia_confidence_test"),
        ("UA on samples forgotten earlier", "ua_excluded"),
    ]
    lines = [
        f"# Deletion batch {meta.batch_id}",
        "",
        f"Requests: {', '.join(meta.request_ids)}; forget set: {meta.forget_count} samples"
        f"{' (classes ' + ', '.join(meta.forget_classes) + ')' if meta.forget_classes else ''}; "
        f"md5 {meta.forget_md5}.",
        f"Base: {meta.require_base().model} version {meta.require_base().version}.",
        "",
        "| metric (%) | before (champion) | after |",
        "|---|---:|---:|",
    ]
    now, then = after.model_dump(), before.model_dump()
    for label, k in rows:
        if now[k] is not None:
            lines.append(
                f"| {label} | {then[k] if then[k] is not None else float('nan'):.2f} | {now[k]:.2f} |"
            )
    lines += ["", "| gate | value | bound | n | detectable | verdict |", "|---|---:|---:|---:|---:|---|"]
    lines += [
        f"| {r.name} | {_num(r.value)} | {_num(r.bound)} | {r.n if r.n is not None else ''} | "
        f"{_num(r.detectable)} | {verdict_cell(r)} |"
        for r in results
    ]
    power = power_lines(results)
    if power:
        lines += [
            "",
            "Evidence power (the smallest effect each test could have detected at this forget set's "
            "size; a value below it is no evidence of forgetting, only of a test too small to see):",
            "",
            *(f"- {p}" for p in power),
        ]
    widened = [r for r in results if "bound widened" in r.detail]
    lines += [f"- {r.name}: {r.detail.split('; ', 1)[-1]}" for r in widened]
    if meta.rejected:
        lines += ["", "Rejected requests:"] + [f"- {r.request_id}: {r.reason}" for r in meta.rejected]
    return "\n".join(lines) + "\n"


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"
