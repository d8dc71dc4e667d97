"""The experiment (`rfau run`): the whole chain on one dataset, side by side with retrain and do-nothing.

split -> original (trained here when none is given) -> unlearn (RFAU) -> retrain -> evaluate all
three -> a summary (``summary.json`` + a table) -> MLflow runs and a registry version, promoted to
champion only when the gates pass. With no requests given, a demo request is made:
``random`` names 10% of the training samples, ``class`` names one whole class.
"""

from __future__ import annotations

import random
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from pathlib import Path

import rfau
from rfau.batch import requested_samples
from rfau.config import TrainConfig
from rfau.data.datasets import ImageDataset, load_dataset
from rfau.data.request_store import RequestState, RequestStore
from rfau.data.split import HOLDOUT_FRACTION, Split, in_holdout
from rfau.io import write_json
from rfau.metrics import GAP_METRICS, avg_gap
from rfau.metrics.plots import confidence_histogram
from rfau.models.checkpoint import read_card
from rfau.params import BatchParams
from rfau.records import MethodRow, RunRegistration, RunSummary, UnlearnInfo
from rfau.stages import evaluate_stage, split_stage, train_stage, unlearn_stage
from rfau.tracking.settings import TrackingSettings


def demo_request(
    ds: ImageDataset,
    scenario: str,
    out_dir: Path,
    seed: int | str = 0,
    fraction: float = 0.1,
    forget_class: str | None = None,
    exclude: AbstractSet[str] = frozenset(),
    request_id: str | None = None,
    subject: str | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
) -> Path:
    """Write a demo deletion request: 10% random training samples, or one whole class.
    ``exclude``: samples already forgotten (never drawn again); at most half the pool is drawn."""
    now = datetime.now(UTC).isoformat()
    if scenario == "random":
        # drawn from what the original model trained on (the holdout slice it never saw is left out)
        pool = [s for s in ds.split_ids("train") if s not in exclude and not in_holdout(s, holdout_fraction)]
        k = min(len(pool) // 2, round(fraction * len(ds.split_ids("train"))))
        req = {
            "request_id": request_id or f"demo-random-{seed}",
            "sample_ids": sorted(random.Random(seed).sample(pool, k)),
            "reason": f"demo: {fraction:.0%} random training samples",
            "received_at": now,
        }
    elif scenario == "class":
        cls = forget_class or ds.classes[3 % len(ds.classes)]
        req = {
            "request_id": f"demo-class-{cls}",
            "classes": [cls],
            "reason": f"demo: forget class {cls}",
            "received_at": now,
        }
    else:
        raise ValueError(f"unknown scenario {scenario!r}; use 'random' or 'class'")
    if subject:
        req["subject"] = subject
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{req['request_id']}.json"
    write_json(path, req)
    return path


def run_job(
    dataset: str,
    workdir: str | Path,
    requests: list[Path] | None = None,
    scenario: str = "random",
    model_dir: str | Path | None = None,
    rfau_config: dict | None = None,
    train_config: TrainConfig | None = None,
    retrain: bool = True,
    seed: int = 0,
    track: bool = True,
    settings: TrackingSettings | None = None,
) -> RunSummary:
    """The experiment: RFAU (and retrain) against the original on one request -> summary.json."""
    wd = Path(workdir)
    ds = load_dataset(dataset)
    if not requests:
        requests = [demo_request(ds, scenario, wd / "requests", seed=seed)]
    split = split_stage(ds, requests, wd / "split")
    if model_dir is None:
        model_dir = wd / "original"
        train_stage(ds, model_dir, train_config or TrainConfig.preset(ds.kind, seed=seed))
    rows: dict[str, MethodRow] = {}
    models = {"original": Path(model_dir)}
    info = unlearn_stage(
        model_dir, ds, wd / "split", wd / "rfau", "rfau", {"seed": seed, **(rfau_config or {})}
    )
    models["rfau"] = wd / "rfau"
    if retrain:
        unlearn_stage(model_dir, ds, wd / "split", wd / "retrain", "retrain", {"seed": seed})
        models["retrain"] = wd / "retrain"
    for name, mdir in models.items():
        ev = evaluate_stage(mdir, ds, wd / "split", wd / "metrics" / f"{name}.json", seed=seed)
        cost = UnlearnInfo.read(mdir / "unlearn.json") if name != "original" else None
        rows[name] = MethodRow(
            **ev.model_dump(),
            seconds=cost.seconds if cost else None,
            trainable_params=cost.trainable_params if cost else None,
        )
    if "retrain" in rows:
        ref = rows["retrain"].model_dump()
        for name, r in rows.items():
            rows[name] = r.model_copy(update={"avg_gap": avg_gap(r.model_dump(), ref, GAP_METRICS)})
    summary = RunSummary(
        dataset=ds.name,
        requests=[str(p) for p in requests],
        forget=len(split.forget),
        forget_classes=split.forget_classes,
        rfau_trainable_params=info.trainable_params,
        total_params=info.total_params,
        rfau_trainable_share=info.trainable_share,
        methods=rows,
    )
    confidence_histogram(ds, split, models, wd / "metrics" / "confidence_hist.png")
    if track:
        summary.registry = track_and_register(wd, split, rows, Path(model_dir), settings)
    summary.write(wd / "summary.json")
    return summary


def track_and_register(
    wd: Path, split: Split, rows: dict[str, MethodRow], model_dir: Path, settings: TrackingSettings | None
) -> RunRegistration:
    """Log the run to MLflow (a parent run, a nested run per stage) and register: the original
    as the bootstrap champion where the registry has none, then the RFAU model behind the gates."""
    from rfau.tracking import registry
    from rfau.tracking.stage_runs import log_data_split, log_evaluate, log_unlearn

    settings = settings or TrackingSettings.from_env()
    with registry.pipeline_run(
        settings,
        "rfau-run",
        tags={
            "request_ids": ",".join(split.request_ids),
            "forget_sha256": split.forget_hash,
            "dataset": split.dataset,
            "code_version": rfau.__version__,
            "base_weights_sha256": read_card(model_dir).weights_sha256,
        },
    ) as run_reg:
        log_data_split(run_reg, wd / "split")
        log_unlearn(run_reg, wd / "rfau", artifacts=[wd / "rfau" / "adapter", wd / "rfau" / "model.json"])
        log_evaluate(
            run_reg,
            {f"{m}.{k}": v for m, r in rows.items() for k, v in r.model_dump().items()},
            [wd / "metrics"],
        )
        boot = registry.register(model_dir, wd / "metrics" / "original.json", settings, bootstrap=True)
        registry.set_run_tags({"base_model_version": boot.version})
        reg = registry.register(
            wd / "rfau",
            wd / "metrics" / "rfau.json",
            settings,
            baseline_metrics_path=wd / "metrics" / "original.json",
        )
    return RunRegistration(original_version=boot.version, **reg.model_dump())


def queue_demo_request(p: BatchParams, store: str) -> str:
    """Queue a demo request: 5% of the training samples not forgotten yet, drawn at random."""
    ds = load_dataset(p.dataset)
    reqs = RequestStore.from_uri(store)
    gone = set(requested_samples(reqs, ds, set(RequestState) - {RequestState.REJECTED})[0])
    rid = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    path = demo_request(
        ds,
        "random",
        Path("runs") / "requests",
        seed=rid,
        fraction=0.05,
        exclude=gone,
        request_id=rid,
        subject=f"user-{rid}",
        holdout_fraction=p.holdout_fraction,
    )
    reqs.add([path], ds)
    return rid
