"""The main job: the whole chain on one dataset, side by side with retrain and do-nothing.

split -> original (trained here when none is given) -> unlearn (RFAU) -> retrain -> evaluate all
three -> a summary (``summary.json`` + a table). With no requests given, a demo request is made:
``random`` names 10% of the training samples, ``class`` names one whole class.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from rfau.config import TrainConfig
from rfau.data.datasets import ImageDataset, load_dataset
from rfau.data.split import in_holdout
from rfau.io import read_json, write_json
from rfau.metrics import GAP_METRICS, avg_gap
from rfau.stages import evaluate_stage, split_stage, train_stage, unlearn_stage

SUMMARY_KEYS = ("ua", "ra", "ta", "ta_kept_classes", "mia_confidence", "mia_entropy")


def demo_request(ds: ImageDataset, scenario: str, out_dir: Path, seed: int = 0,
                 fraction: float = 0.1, forget_class: str | None = None) -> Path:
    """Write a demo deletion request: 10% random training samples, or one whole class."""
    now = datetime.now(UTC).isoformat()
    if scenario == "random":
        # drawn from what the original model trained on (the holdout slice it never saw is left out)
        pool = [s for s in ds.split_ids("train") if not in_holdout(s, 0.1)]
        k = round(fraction * len(ds.split_ids("train")))
        req = {"request_id": f"demo-random-{seed}", "sample_ids": sorted(random.Random(seed).sample(pool, k)),
               "reason": f"demo: {fraction:.0%} random training samples", "received_at": now}
    elif scenario == "class":
        cls = forget_class or ds.classes[3 % len(ds.classes)]
        req = {"request_id": f"demo-class-{cls}", "classes": [cls],
               "reason": f"demo: forget class {cls}", "received_at": now}
    else:
        raise ValueError(f"unknown scenario {scenario!r}; use 'random' or 'class'")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{req['request_id']}.json"
    write_json(path, req)
    return path


def run_job(dataset: str, workdir: str | Path, requests: list[Path] | None = None,
            scenario: str = "random", model_dir: str | Path | None = None,
            rfau_config: dict | None = None, train_config: TrainConfig | None = None,
            retrain: bool = True, seed: int = 0) -> dict:
    wd = Path(workdir)
    ds = load_dataset(dataset)
    if not requests:
        requests = [demo_request(ds, scenario, wd / "requests", seed=seed)]
    split = split_stage(ds, requests, wd / "split")
    if model_dir is None:
        model_dir = wd / "original"
        train_stage(ds, model_dir, train_config or TrainConfig.preset(ds.kind, seed=seed))
    rows: dict[str, dict] = {}
    models = {"original": Path(model_dir)}
    info = unlearn_stage(model_dir, ds, wd / "split", wd / "rfau", "rfau", {"seed": seed, **(rfau_config or {})})
    models["rfau"] = wd / "rfau"
    if retrain:
        unlearn_stage(model_dir, ds, wd / "split", wd / "retrain", "retrain", {"seed": seed})
        models["retrain"] = wd / "retrain"
    for name, mdir in models.items():
        rows[name] = evaluate_stage(mdir, ds, wd / "split", wd / "metrics" / f"{name}.json", seed=seed)
        if name != "original":
            rows[name]["seconds"] = read_json(mdir / "unlearn.json")["seconds"]
            rows[name]["trainable_params"] = read_json(mdir / "unlearn.json")["trainable_params"]
    if "retrain" in rows:
        for r in rows.values():
            r["avg_gap"] = avg_gap(r, rows["retrain"], GAP_METRICS)
    summary = {
        "dataset": ds.name,
        "requests": [str(p) for p in requests],
        "forget": len(split.forget),
        "forget_classes": split.forget_classes,
        "rfau_trainable_params": info["trainable_params"],
        "total_params": info["total_params"],
        "rfau_trainable_share": info["trainable_share"],
        "methods": rows,
    }
    write_json(wd / "summary.json", summary)
    return summary
