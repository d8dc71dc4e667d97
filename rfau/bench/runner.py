"""``run_bench``: for each seed the original, then per scenario every method through the same
stages, evaluated and gated (see ``rfau.bench``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rfau.bench.configs import (
    ALL_METHODS,
    NOISE_FLOOR,
    SCENARIOS,
    STRUCTURED_CLASS_INDEX,
    BenchConfig,
    holdout_salt,
    load_bench_dataset,
    method_settings,
)
from rfau.bench.gates import certified_seconds, gate_columns
from rfau.bench.report import write_outputs
from rfau.config import TrainConfig
from rfau.data.base import Dataset
from rfau.data.demo import demo_request
from rfau.data.split import read_split
from rfau.data.subpopulation import subpopulation_forget_set
from rfau.data.text import TextDataset
from rfau.errors import UsageError
from rfau.io import write_json
from rfau.methods import get_method
from rfau.methods.runner import load_libraries
from rfau.metrics import GAP_METRICS, avg_gap, evaluate_model
from rfau.metrics.classwise import CLASSWISE_KEYS
from rfau.metrics.distance import activation_distance, js_divergence, loss_threshold_mia
from rfau.metrics.efficiency import measure
from rfau.metrics.evidence import EVIDENCE_KEYS
from rfau.metrics.plots import confidence_histogram
from rfau.models.checkpoint import load_checkpoint, read_card
from rfau.models.families import get_family
from rfau.models.families.backbone import finetune_original
from rfau.progress import console
from rfau.records import UnlearnInfo
from rfau.stages import split_stage, train_stage, unlearn_stage


def scenario_request(ds: Dataset, scenario: str, out_dir: Path, seed: int, original: Path, salt: str) -> Path:
    """The scenario's deletion request: demo_request's class / 10% random, or the structured
    sub-population of the class scenario's class (chosen in the original's feature space); drawn
    from what the original trained on (the training split minus the holdout of ``salt``)."""
    if scenario != "structured":
        return demo_request(ds, scenario, out_dir, seed=seed, holdout_salt=salt)
    cls = ds.classes[STRUCTURED_CLASS_INDEX % len(ds.classes)]
    model, _ = load_checkpoint(original)
    req = {
        "request_id": f"bench-structured-{seed}",
        "sample_ids": subpopulation_forget_set(ds, model, cls, seed=seed, holdout_salt=salt),
        "reason": f"bench: a hard sub-population of class {cls} (rfau.data.subpopulation)",
        "received_at": datetime.now(UTC).isoformat(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"{req['request_id']}.json", req)
    return out_dir / f"{req['request_id']}.json"


ROW_METRICS: tuple[str, ...] = (
    "ua",
    "ra",
    "ta",
    "ta_kept_classes",
    "ta_forgotten_classes",
    "ta_forget_sample_classes",
)
ROW_METRICS += ("mia_confidence", "mia_entropy", *EVIDENCE_KEYS, *CLASSWISE_KEYS)


def run_bench(
    cfg: BenchConfig,
    out_dir: str | Path,
    data: str | None = None,
    methods: list[str] | None = None,
    device: str = "auto",
    reuse: bool = False,
    noise_floor: bool = True,
) -> list[dict]:
    """``reuse``: keep an earlier run's original and retrain models in ``out_dir`` (for tuning a
    method without paying for the references again); their seconds are the earlier run's.
    ``noise_floor``: False skips the second retrain (``retrain_2``), e.g. for a gate table."""
    out = Path(out_dir)
    methods = methods or [m for m in ALL_METHODS if m in cfg.methods]
    unknown = set(methods) - set(cfg.methods)
    if unknown:
        raise UsageError(f"unknown methods for bench {cfg.name!r}: {sorted(unknown)}")
    bad = set(cfg.scenarios) - set(SCENARIOS)
    if bad:
        raise UsageError(f"unknown scenarios {sorted(bad)}; known: {', '.join(SCENARIOS)}")
    if "retrain" not in methods:
        methods = ["retrain", *methods]  # the gap needs the gold standard
    ds = load_bench_dataset(cfg, data)
    rows: list[dict] = []
    work = out / "work"
    for seed in cfg.seeds:
        orig = work / f"seed{seed}" / "original"
        tcfg = cfg.train.model_copy(update={"seed": seed, "device": device})
        salt = holdout_salt(seed)
        if reuse and _card_matches(orig, tcfg, salt):
            original_seconds = float("nan")
        else:
            with measure() as cost:
                if cfg.backbone:  # text: fine-tuned from a pre-trained backbone
                    assert isinstance(ds, TextDataset), "a backbone config loads a text dataset"
                    finetune_original(ds, orig, tcfg, cfg.backbone, holdout_salt=salt)
                else:
                    train_stage(ds, orig, tcfg, holdout_salt=salt)
            original_seconds = cost["seconds"]
        original_model, card = load_checkpoint(orig)
        ds = get_family(card.family).prepare_dataset(ds, card)  # text: tokenised as the model takes it
        fit = {"original_train_acc": card.metrics["ra"], "original_test_acc": card.metrics["ta"]}
        console.print(
            f"original (seed {seed}): train accuracy {fit['original_train_acc']:.2f}%, test accuracy "
            f"{fit['original_test_acc']:.2f}%, memorisation gap "
            f"{fit['original_train_acc'] - fit['original_test_acc']:.2f} points"
        )
        for scenario in cfg.scenarios:
            sdir = work / f"seed{seed}" / scenario
            req = scenario_request(ds, scenario, sdir / "requests", seed, orig, salt)
            split_stage(ds, [req], sdir / "split", holdout_salt=salt)
            split = read_split(sdir / "split")
            logits = {}
            srows = []
            evals: dict[str, dict] = {}
            for method in [*methods, *([NOISE_FLOOR] if noise_floor else [])]:
                runs_as = "retrain" if method == NOISE_FLOOR else method
                settings = method_settings(cfg, method, seed, device)
                mdir = sdir / method
                if reuse and runs_as in ("original", "retrain") and (mdir / "unlearn.json").exists():
                    info = UnlearnInfo.read(mdir / "unlearn.json")  # an earlier run's reference model
                    cost = {
                        "seconds": info.seconds,
                        "peak_rss_mb": float("nan"),
                        "peak_cuda_mb": None,
                        "cuda_rise_mb": None,
                    }
                else:
                    load_libraries(get_method(runs_as))  # stage_seconds: no one-time library load
                    with measure() as cost:
                        info = unlearn_stage(orig, ds, sdir / "split", mdir, runs_as, settings)
                model, _ = load_checkpoint(mdir)
                out_logits: dict = {}
                m = evaluate_model(
                    model, ds, split, seed=seed, logits_out=out_logits, reference_model=original_model
                )
                f_idx, r_idx, t_idx = (ds.indices(getattr(split, k)) for k in ("forget", "retain", "test"))
                lf, lr, lt = (out_logits[k] for k in ("forget", "retain", "test"))
                logits[method] = lf
                evals[method] = m
                write_json(mdir / "evaluation.json", m)  # to gate it again under other bounds
                row = {
                    "config": cfg.name,
                    "scenario": scenario,
                    "seed": seed,
                    "method": method,
                    **{k: m.get(k) for k in ROW_METRICS},
                    "mia_loss_threshold": loss_threshold_mia(
                        lr, ds.y[r_idx], lt, ds.y[t_idx], lf, ds.y[f_idx]
                    ),
                    "seconds": info.seconds,
                    "stage_seconds": cost["seconds"],
                    "trainable_params": info.trainable_params,
                    "total_params": info.total_params,
                    "peak_rss_mb": cost["peak_rss_mb"],
                    "peak_cuda_mb": cost["peak_cuda_mb"],
                    "cuda_rise_mb": cost["cuda_rise_mb"],
                    "samples_per_s": (len(split.retain) + len(split.forget)) / max(info.seconds, 1e-9)
                    if method != "original"
                    else None,
                    "original_train_seconds": original_seconds,
                    **fit,
                    "forget": len(split.forget),
                }
                srows.append(row)
            # every model through the promotion gates, the original as the champion it came from
            champion = evals.get("original") or evaluate_model(original_model, ds, split, seed=seed)
            for r in srows:
                r |= gate_columns(evals[r["method"]], champion)
            certified_seconds(srows)
            ref = next(r for r in srows if r["method"] == "retrain")
            for r in srows:
                r["avg_gap"] = avg_gap(r, ref, GAP_METRICS)
                r["js_to_retrain"] = js_divergence(logits[r["method"]], logits["retrain"])
                r["act_dist_to_retrain"] = activation_distance(logits[r["method"]], logits["retrain"])
            rows.extend(srows)
            _mia_histogram(ds, split, sdir, out / f"mia_hist_{scenario}.png", seed)
            write_outputs(cfg, rows, out, ds)  # after every scenario: a cut-off run keeps what it finished
    return rows


def _card_matches(model_dir: Path, cfg: TrainConfig, salt: str) -> bool:
    if not (model_dir / "model.json").exists():
        return False
    card = read_card(model_dir)
    return card.lineage.get("train_config") == cfg.model_dump() and card.holdout_salt == salt


def _mia_histogram(ds, split, sdir: Path, path: Path, seed: int) -> None:
    if seed != 0 and path.exists():
        return
    names = [n for n in ("original", "retrain", "rfau") if (sdir / n / "model.json").exists()]
    confidence_histogram(ds, split, {n: sdir / n for n in names}, path)
