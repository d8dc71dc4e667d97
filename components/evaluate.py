"""evaluate: the new model vs the champion on the batch's split, gate verdicts, plots, report."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from rfau.components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    batch: Input[Dataset],
    model: Input[Model],
    gates: dict,
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[Markdown],
    plots: Output[HTML],
) -> str:
    """-> "passed", "failed", "escalate" (failed, and the escalation ladder's exact rung remains)
    or "skipped" (nothing to evaluate)."""
    import base64
    from pathlib import Path

    from rfau.batch import evaluate as stage
    from rfau.batch import release_on_sigterm
    from rfau.params import parse_params
    from rfau.records import Confusion, Skipped

    with release_on_sigterm(batch.path, "the evaluate task"):  # a cancelled run releases its requests
        flat = stage(batch.path, model.path, evaluation.path, parse_params({"gates": gates}).gates)
    out = Path(evaluation.path)
    if isinstance(flat, Skipped):
        metrics.log_metric("skipped", 1.0)
        Path(report.path).write_text(f"Nothing to evaluate: {flat.reason}\n")
        Path(plots.path).write_text("<p>nothing to evaluate</p>")
        return "skipped"
    for k, v in flat.numbers().items():
        metrics.log_metric(k, v)
    cm = Confusion.read(out / "confusion.json")
    confusion.log_confusion_matrix(cm.classes, cm.matrix)
    Path(report.path).write_text((out / "report.md").read_text())
    png = base64.b64encode((out / "confidence_hist.png").read_bytes()).decode()
    Path(plots.path).write_text(
        f'<h3>True-label confidence, forget vs test</h3><img src="data:image/png;base64,{png}">'
    )
    from rfau.batch.ladder import should_escalate

    if flat.gates_passed:
        return "passed"
    return "escalate" if should_escalate(Path(model.path), out) else "failed"
