"""The experiment (`rfau run`): one deletion batch on a throwaway request store and registry,
side by side with retrain and do-nothing.

The request (a demo one unless given: ``random`` names 10% of the training samples, ``class``
one whole class) is queued in a store inside the work folder, and ``rfau.batch.run_batch`` runs
the batch there as a scheduled run would: the original is bootstrapped into an empty registry
(trained, or the given model), RFAU forgets the request, the new version is evaluated against
it and registered behind the gates. Then the retrain column: retrain on the batch's split,
evaluate, and the avg gap of each model to retrain -> ``summary.json`` and a table.

The registry and the ledger are the work folder's own (``WORKDIR/state``, made afresh each run),
never the deletion batches': an experiment neither moves the production champion nor writes to
its ledger (a batch's housekeeping would read the other's versions as orphans), and it always
starts from the original its seed trains, so its numbers do not depend on earlier runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rfau.batch import bootstrap, run_batch
from rfau.data.base import Dataset
from rfau.data.datasets import load_dataset
from rfau.data.demo import demo_request
from rfau.data.request_store import RequestStore
from rfau.data.split import read_split
from rfau.errors import RfauError, UsageError
from rfau.io import claim_output, fresh_dir
from rfau.metrics import GAP_METRICS, avg_gap
from rfau.metrics.plots import confidence_histogram
from rfau.params import BatchParams
from rfau.records import (
    BatchMeta,
    BatchOutcome,
    Evaluation,
    GateReport,
    MethodRow,
    Registered,
    RunRegistration,
    RunSummary,
    UnlearnInfo,
)
from rfau.stages import evaluate_stage, unlearn_stage
from rfau.tracking.settings import TrackingSettings

RUN = "run"  # what its work folder is marked as written by: a later run replaces only such a folder
# what one run writes into its work folder (a new folder: every run starts afresh)
STATE = "state"  # the run's own registry (MLflow sqlite + artifacts) and ledger copy
STORE = "store"  # its request store and ledger
BATCH_DIR = "batch"  # run_batch's work folder: batch/ (requests, split, base = the original), evaluation/...
RFAU_DIR, RETRAIN_DIR, METRICS_DIR = "rfau", "retrain", "metrics"


def run_job(
    dataset: str,
    workdir: str | Path,
    requests: list[Path] | None = None,
    scenario: str = "random",
    model_dir: str | Path | None = None,
    rfau_config: dict | None = None,
    train: dict | None = None,
    retrain: bool = True,
    seed: int = 0,
    track: bool = True,
    settings: TrackingSettings | None = None,
) -> RunSummary:
    """The experiment: a batch (RFAU) on a throwaway store and registry, then retrain and the
    gaps to it -> summary.json. ``model_dir``: the original (else one is trained with ``seed``
    and the dataset's recipe, ``train`` on top); ``track=False``: the throwaway registry is
    removed afterwards and the summary has no registry entry; ``settings``: only the model's
    name is taken from them (the registry is always the work folder's own)."""
    wd = Path(workdir)
    _outside(
        claim_output(wd, RUN, is_run_folder), [*(requests or []), *([Path(model_dir)] if model_dir else [])]
    )
    ds = load_dataset(dataset)
    with fresh_dir(wd, RUN, is_run_folder):  # an earlier run's folder is put back if this one fails
        return _run(
            ds, dataset, wd, requests, scenario, model_dir, rfau_config, train, retrain, seed, track, settings
        )


def is_run_folder(folder: Path) -> bool:
    """A work folder of `rfau run` from before output folders were marked: its summary.json."""
    try:
        RunSummary.read(folder / "summary.json")
    except RfauError:
        return False
    return True


def _outside(wd: Path, inputs: list[Path]) -> None:
    """The run's inputs may not live in the work folder it replaces."""
    for p in inputs:
        if p.resolve().is_relative_to(wd):
            raise UsageError(
                f"{str(p)!r} is inside the work folder {str(wd)!r}, which the run replaces; move it out"
            )


def _run(
    ds: Dataset,
    dataset: str,
    wd: Path,
    requests: list[Path] | None,
    scenario: str,
    model_dir: str | Path | None,
    rfau_config: dict | None,
    train: dict | None,
    retrain: bool,
    seed: int,
    track: bool,
    settings: TrackingSettings | None,
) -> RunSummary:
    if not requests:
        requests = [demo_request(ds, scenario, wd / "requests", seed=seed)]
    RequestStore.from_uri(wd / STORE).add(list(requests), ds)  # validated: all or nothing
    model_name = (settings or TrackingSettings.from_env()).model_name
    own = TrackingSettings(state_dir=(wd / STATE).resolve(), model_name=model_name)
    params = BatchParams(
        dataset=dataset,
        store=str((wd / STORE).resolve()),
        method="rfau",
        method_config={"seed": seed, **(rfau_config or {})},
        escalation=["rfau"],  # the experiment measures RFAU itself (retrain is its own column)
        train={"seed": seed, **(train or {})},
    )
    if model_dir is not None:  # the given original instead of one trained by the batch
        bootstrap(
            ds,
            wd / "original.bootstrap",
            own,
            holdout_fraction=params.holdout_fraction,
            original=Path(model_dir),
        )
    meta, registered = _finished(wd / BATCH_DIR, run_batch(wd / BATCH_DIR, params, own))
    summary = _summary(ds, wd, requests, meta, retrain, seed)
    if track:
        summary.registry = _registration(wd, meta, registered)
    else:
        shutil.rmtree(wd / STATE)
    summary.write(wd / "summary.json")
    return summary


def _summary(
    ds: Dataset, wd: Path, requests: list[Path], meta: BatchMeta, retrain: bool, seed: int
) -> RunSummary:
    """The columns: the batch's base (the original) and its model (RFAU), evaluated by the batch,
    and retrain on the batch's split; the avg gap of each to retrain."""
    batch = wd / BATCH_DIR
    split_dir, evaluation = batch / "batch" / "split", batch / "evaluation"
    (batch / "model").replace(wd / RFAU_DIR)  # the models by method: original (the base), rfau, retrain
    models = {"original": batch / "batch" / "base", "rfau": wd / RFAU_DIR}
    metrics = wd / METRICS_DIR
    metrics.mkdir(parents=True)
    shutil.copyfile(evaluation / "before.json", metrics / "original.json")
    shutil.copyfile(evaluation / "after.json", metrics / "rfau.json")
    if retrain:
        unlearn_stage(models["original"], ds, split_dir, wd / RETRAIN_DIR, "retrain", {"seed": seed})
        models["retrain"] = wd / RETRAIN_DIR
        # the batch's evaluation seed (0), so that the three columns are measured alike
        evaluate_stage(models["retrain"], ds, split_dir, metrics / "retrain.json")
    rows = {name: _row(metrics / f"{name}.json", mdir, name) for name, mdir in models.items()}
    if "retrain" in rows:
        ref = rows["retrain"].model_dump()
        rows = {
            n: r.model_copy(update={"avg_gap": avg_gap(r.model_dump(), ref, GAP_METRICS)})
            for n, r in rows.items()
        }
    confidence_histogram(ds, read_split(split_dir), models, metrics / "confidence_hist.png")
    info = UnlearnInfo.read(wd / RFAU_DIR / "unlearn.json")
    return RunSummary(
        dataset=ds.name,
        requests=[str(p) for p in requests],
        forget=meta.forget_count or 0,
        forget_classes=meta.forget_classes or [],
        rfau_trainable_params=info.trainable_params,
        total_params=info.total_params,
        rfau_trainable_share=info.trainable_share,
        methods=rows,
    )


def _finished(batch: Path, outcome: BatchOutcome) -> tuple[BatchMeta, Registered]:
    """The batch's record and registration, once it is sure the batch forgot every request (a
    rejected or deferred request is an error here: the store held nothing else)."""
    problems = [f"{r.request_id}: {r.reason}" for r in (*outcome.rejected, *outcome.deferred)]
    if problems or outcome.registered is None:
        raise RfauError(f"the experiment's batch forgot nothing: {'; '.join(problems) or 'nothing pending'}")
    return BatchMeta.read(batch / "batch" / "batch.json"), outcome.registered


def _row(metrics_path: Path, model_dir: Path, name: str) -> MethodRow:
    cost = UnlearnInfo.read(model_dir / "unlearn.json") if name != "original" else None
    return MethodRow(
        **Evaluation.read(metrics_path).model_dump(),
        seconds=cost.seconds if cost else None,
        trainable_params=cost.trainable_params if cost else None,
    )


def _registration(wd: Path, meta: BatchMeta, reg: Registered) -> RunRegistration:
    """The registry entry of the run: the bootstrap original and the RFAU version (always a new
    version: the registry was made afresh for this run) with its gates' verdicts."""
    return RunRegistration(
        original_version=meta.require_base().version,
        model=reg.model,
        version=reg.version,
        new=True,
        champion=reg.champion,
        gates_passed=reg.gates_passed,
        gates=GateReport.read(wd / BATCH_DIR / "evaluation" / "gates.json").gates,
    )
