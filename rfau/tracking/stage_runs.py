"""The one place stage runs are written to MLflow: the same run names and parameters for a batch
(`rfau batch run`, the pipeline) and for the experiment (`rfau run`)."""

from __future__ import annotations

from pathlib import Path

from rfau.io import read_json
from rfau.tracking.registry import Registry

UNLEARN_METRICS = ("seconds", "trainable_params", "trainable_share")


def log_data_split(
    reg: Registry, split_dir: Path, extra: dict | None = None, artifacts: list[Path] = ()
) -> str:
    """``data-split``: the manifest counts (plus ``extra``, e.g. the requests taken and rejected)."""
    summary = split_dir / "split.json"
    params = {**read_json(summary)["counts"], **(extra or {})}
    return reg.log_stage("data-split", params=params, artifacts=[summary, *artifacts])


def log_unlearn(reg: Registry, model_dir: Path, artifacts: list[Path] = ()) -> str:
    """``unlearn``: the method and its settings, its cost, its per-epoch history."""
    unl = read_json(model_dir / "unlearn.json")
    return reg.log_stage(
        "unlearn",
        params={"method": unl["method"], **unl["config"]},
        metrics={k: unl[k] for k in UNLEARN_METRICS},
        history=unl.get("history"),
        artifacts=[model_dir / "unlearn.json", *artifacts],
    )


def log_evaluate(reg: Registry, metrics: dict, artifacts: list[Path]) -> str:
    """``evaluate``: every numeric metric (flags left out)."""
    return reg.log_stage(
        "evaluate", metrics={k: v for k, v in metrics.items() if not isinstance(v, bool)}, artifacts=artifacts
    )
