"""The one place stage runs are written to MLflow: the same run names and parameters for a batch
(`rfau batch run`, the pipeline) and for the experiment (`rfau run`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rfau.io import read_json
from rfau.records import UnlearnInfo
from rfau.tracking.registry import Registry
from rfau.tracking.tags import RunTags


def log_data_split(
    reg: Registry, split_dir: Path, extra: dict[str, Any] | None = None, artifacts: Sequence[Path] = ()
) -> str:
    """``data-split``: the manifest counts (plus ``extra``, e.g. the requests taken and rejected)."""
    summary = split_dir / "split.json"
    params = {**read_json(summary)["counts"], **(extra or {})}
    return reg.log_stage("data-split", params=params, artifacts=[summary, *artifacts])


def log_unlearn(reg: Registry, model_dir: Path, artifacts: Sequence[Path] = ()) -> str:
    """``unlearn``: the method and its settings, its cost, its per-epoch history."""
    unl = UnlearnInfo.read(model_dir / "unlearn.json")
    return reg.log_stage(
        "unlearn",
        params={"method": unl.method, **unl.config},
        metrics=unl.model_dump(include={"seconds", "trainable_params", "trainable_share"}),
        history=unl.history,
        artifacts=[model_dir / "unlearn.json", *artifacts],
    )


def log_evaluate(reg: Registry, metrics: dict[str, Any], artifacts: Sequence[Path]) -> str:
    """``evaluate``: every numeric value of ``metrics`` (a metrics record's dump; flags and
    nested values left out)."""
    return reg.log_stage(
        "evaluate",
        metrics={k: v for k, v in metrics.items() if not isinstance(v, bool)},
        artifacts=list(artifacts),
    )


def log_rungs(reg: Registry, attempts: Sequence[Any]) -> list[str]:
    """One nested run per rung of the escalation ladder the batch tried (``rfau.batch.ladder.Attempt``):
    its method and settings, its cost, its gate verdict and why it failed."""
    return [
        reg.log_stage(
            f"rung {a.rung}: {a.method}",
            params={"rung": a.rung, "method": a.method, **a.config},
            metrics={"seconds": a.seconds, "gates_passed": float(a.gates_passed)},
            tags={RunTags.FAILED_GATES: ",".join(a.failed_gates), RunTags.WHY: a.why[:5000]},
        )
        for a in attempts
    ]
