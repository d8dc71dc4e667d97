"""The evaluate stage: the new model and its base on the batch's split, with gate verdicts."""

from __future__ import annotations

from pathlib import Path

from rfau.batch.common import _skip, read_batch
from rfau.data.datasets import load_dataset
from rfau.data.split import read_split
from rfau.gates import Gates, check_gates
from rfau.io import atomic_dir, claim_output, write_json
from rfau.metrics.plots import confidence_histogram
from rfau.records import BatchMetrics, Skipped, UnlearnInfo
from rfau.report import batch_report, confusion
from rfau.stages import evaluate_stage

STAGE = "batch evaluate"  # what its output folder is marked as written by


def evaluate(
    batch_dir: str | Path,
    model_dir: str | Path,
    out_dir: str | Path,
    gates: Gates | None = None,
    seed: int = 0,
) -> BatchMetrics | Skipped:
    """The new model and the champion it came from, on the batch's split -> before.json,
    after.json, metrics.json (flat, for dvc metrics and KFP), gates.json, confusion.json,
    confidence_hist.png and report.md."""

    claim_output(out_dir, STAGE)  # before anything is evaluated
    meta = read_batch(batch_dir)
    if meta.empty:
        return _skip(Path(out_dir), meta, "metrics.json", STAGE)
    b, model_dir, gates = Path(batch_dir), Path(model_dir), gates or Gates()
    ds = load_dataset(meta.dataset_uri)
    split = read_split(b / "split")
    unl = UnlearnInfo.read(model_dir / "unlearn.json")
    with atomic_dir(out_dir, STAGE) as tmp:
        after = evaluate_stage(model_dir, ds, b / "split", tmp / "after.json", seed)
        before = evaluate_stage(b / "base", ds, b / "split", tmp / "before.json", seed)
        verdict = check_gates(after, before, gates)  # the regime: the split's, for every method
        flat = BatchMetrics.build(after, before, verdict.passed, len(split.forget), unl.seconds)
        flat.write(tmp / "metrics.json")
        verdict.write(tmp / "gates.json")
        cm, rows = confusion(model_dir, ds, split)
        cm.write(tmp / "confusion.json")
        # for `dvc plots` (confusion template)
        write_json(tmp / "test_predictions.json", [r.model_dump() for r in rows])
        confidence_histogram(
            ds, split, {"before (champion)": b / "base", "after": model_dir}, tmp / "confidence_hist.png"
        )
        (tmp / "report.md").write_text(batch_report(meta, before, after, verdict.gates))
    return flat
