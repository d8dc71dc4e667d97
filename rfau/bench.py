"""``rfau bench``: every method against retrain and do-nothing, in one run, on one machine.

For each seed: train the original once; for each scenario (one whole class, 10% random samples,
a structured sub-population of one class: ``rfau.data.subpopulation``) make the request, split,
run every method through the same unlearn stage, evaluate (with the per-sample evidence of
``rfau.metrics.evidence``), and compare with retrain. A second retrain with another seed
(``retrain_2``) gives the noise floor: its gap to ``retrain`` is the smallest gap any method can
honestly be expected to reach. Outputs: rows.csv (one row per seed x scenario x method; column
names are the metric JSON keys), table.md (mean +- std over seeds), plots (gap vs seconds with the
floor drawn), and bench.json (machine, settings).
"""

from __future__ import annotations

import csv
import math
import os
import platform
import re
import statistics
from datetime import UTC, datetime
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from rfau.bench_gates import gate_columns, write_gate_table
from rfau.config import TrainConfig
from rfau.data.datasets import (
    FASHION_MNIST,
    ImageDataset,
    find_fashion_mnist,
    load_dataset,
    load_fashion_mnist,
    subset_dataset,
)
from rfau.data.sources import is_fortunes_source
from rfau.data.split import HOLDOUT_SALT, read_split
from rfau.data.subpopulation import subpopulation_forget_set
from rfau.errors import RfauError, UsageError
from rfau.io import write_json
from rfau.job import demo_request
from rfau.methods import get_method
from rfau.methods.runner import load_libraries
from rfau.metrics import GAP_METRICS, avg_gap, evaluate_model
from rfau.metrics.distance import activation_distance, js_divergence, loss_threshold_mia
from rfau.metrics.efficiency import measure
from rfau.metrics.evidence import CLASSWISE_KEYS, EVIDENCE_KEYS
from rfau.metrics.plots import confidence_histogram
from rfau.models.checkpoint import load_checkpoint, read_card
from rfau.models.families import get_family
from rfau.models.families.backbone import BackboneRecipe, finetune_original
from rfau.progress import console
from rfau.records import UnlearnInfo
from rfau.stages import split_stage, train_stage, unlearn_stage

ALL_METHODS = (
    "original",
    "retrain",
    "finetune",
    "neggrad_plus",
    "random_label",
    "scrub",
    "salun",
    "ssd",
    "rfau",
)
CIFAR_ARCHIVE = "cifar10-imagefolder.tar.gz"
SCENARIOS = ("class", "random", "structured")
NOISE_FLOOR = "retrain_2"  # a second retrain, another seed: the noise floor row
RETRAIN_2_SEED_OFFSET = 10_000  # retrain_2 of seed s trains with seed s + this (never a bench seed)
STRUCTURED_CLASS_INDEX = 3  # the class scenario's class too (job.demo_request's default)


def holdout_salt(seed: int) -> str:
    """Each seed draws its own calibration holdout (seed 0: the pipeline's own slice). With one
    slice for every seed, the seed means would inherit that one small draw's luck: on
    cifar10-small the fixed slice is measurably easier than the test set for every model."""
    return HOLDOUT_SALT if seed == 0 else f"{HOLDOUT_SALT}/seed{seed}"


class BenchConfig(BaseModel):
    name: str
    dataset: str  # "digits", "fashion-mnist" (--data / RFAU_FASHION_MNIST / Debian), "cifar10" or "fortunes"
    # text: the original is this pre-trained backbone fine-tuned with ``train`` (and so is retrain)
    backbone: BackboneRecipe | None = None
    train_per_class: int | None = None
    test_per_class: int | None = None
    train: TrainConfig
    methods: dict[str, dict] = Field(default_factory=dict)  # method -> settings
    scenarios: tuple[str, ...] = SCENARIOS
    seeds: tuple[int, ...] = (0,)


_DIGITS_AUG = {"augment_pad": 1, "augment_flip": False}
CONFIGS: dict[str, BenchConfig] = {
    "digits": BenchConfig(
        name="digits",
        dataset="digits",
        train=TrainConfig.preset("digits"),
        seeds=(0, 1, 2),
        methods={m: dict(_DIGITS_AUG) for m in ALL_METHODS if m not in ("original", "retrain", "rfau", "ssd")}
        | {"original": {}, "retrain": {}, "rfau": {}, "ssd": {}},
    ),
    # sized for 2 CPU cores: the original must memorise its training data (train accuracy ~97%),
    # else random forgetting is not measurable; padding 2 gets there in 30 epochs.
    "cifar10-small": BenchConfig(
        name="cifar10-small",
        dataset="cifar10",
        train_per_class=350,
        test_per_class=200,
        train=TrainConfig(
            architecture="resnet18", width=16, epochs=30, batch_size=64, lr=0.05, augment_pad=2
        ),
        methods={
            m: {"augment_pad": 2} for m in ("finetune", "neggrad_plus", "random_label", "scrub", "salun")
        }
        | {
            "original": {},
            "retrain": {},
            "ssd": {},
            "rfau": {"rank": 6, "epochs": 30, "lr": 5e-3, "retain_budget": 2000, "batch_size": 128},
        },
    ),
    # Fashion-MNIST, the RFAU paper's dataset, sized for 2 CPU cores (at most 40 minutes for 2 seeds
    # x 3 scenarios x every method + retrain_2): the first 300 training / 200 test images per class
    # (3,000 / 2,000 of the 60,000 / 10,000), a ResNet-18 of width 8 (176k parameters) trained 15
    # epochs without augmentation, so that it memorises (train accuracy well above test accuracy,
    # printed by the bench); the baselines keep their papers' epochs, without augmentation too.
    "fashion-mnist": BenchConfig(
        name="fashion-mnist",
        dataset=FASHION_MNIST,
        train_per_class=300,
        test_per_class=200,
        seeds=(0, 1),
        train=TrainConfig(
            architecture="resnet18",
            width=8,
            epochs=15,
            batch_size=128,
            lr=0.05,
            augment_pad=0,
            augment_flip=False,
        ),
        methods={
            m: {"augment_pad": 0, "augment_flip": False}
            for m in ("finetune", "neggrad_plus", "random_label", "scrub", "salun")
        }
        | {
            "original": {},
            "retrain": {},
            "ssd": {},
            "rfau": {"rank": 6, "epochs": 30, "lr": 5e-3, "retain_budget": 2000, "batch_size": 128},
        },
    ),
    # Issue 12's pre-trained demo, sized for 2 CPU cores: all-MiniLM-L6-v2 (the rfau[text] extra,
    # 22.7M parameters) under a fresh head, fine-tuned (last 2 of 6 layers, pooler and head; the
    # frozen embeddings and layers 0-3 run once, cached) on five Debian fortunes categories
    # (rfau.data.fortunes; `make fortunes`), the first 150 training / 50 test records per class,
    # texts cut at 48 tokens (the median fortune is 30). Retrain starts from the same backbone with
    # the same fine-tune. (A check at 100 records per class and 4 epochs: train accuracy 97.3%, test
    # 79.5%: the original memorises, so random forgetting is measurable.)
    # RFAU's adapters sit on layers 4-5 (attention query/value), the pooler and the head, so its
    # frozen prefix (embeddings + layers 0-3) is cached too; the two baselines train every weight.
    "text-minilm": BenchConfig(
        name="text-minilm",
        dataset="fortunes",
        backbone=BackboneRecipe(trainable_layers=2, max_length=48),
        train_per_class=150,
        test_per_class=50,
        scenarios=("class", "random"),
        seeds=(0,),
        train=TrainConfig(
            epochs=6,
            batch_size=32,
            optimizer="adam",
            lr=5e-4,
            weight_decay=0.01,
            augment_pad=0,
            augment_flip=False,
        ),
        methods={
            "original": {},
            "retrain": {},
            "finetune": {"epochs": 2, "batch_size": 32, "lr": 0.01, "augment_pad": 0, "augment_flip": False},
            "neggrad_plus": {
                "epochs": 2,
                "batch_size": 32,
                "forget_batch_size": 32,
                "lr": 0.01,
                "augment_pad": 0,
                "augment_flip": False,
            },
            "rfau": {
                "target_modules": [
                    *(f"layer.{i}.attention.self.{p}" for i in (4, 5) for p in ("query", "value")),
                    "pooler.dense",
                    "classifier",
                ],
                "rank": 8,
                "epochs": 6,
                "lr": 3e-3,
                "retain_budget": 800,
                "batch_size": 64,
                "forget_batch_size": 32,
            },
        },
    ),
    "cifar10": BenchConfig(
        name="cifar10",
        dataset="cifar10",
        train=TrainConfig(architecture="resnet18", width=64, epochs=30, batch_size=512, lr=0.2),
        methods={m: {} for m in ALL_METHODS}
        | {
            "rfau": {
                "rank": 8,
                "epochs": 4,
                "retain_budget": 10000,
                "batch_size": 512,
                "forget_batch_size": 256,
            }
        },
    ),
}


def find_cifar10(data: str | None) -> str:
    """--data, else $RFAU_CIFAR10, else ../shared/datasets/cifar10 beside the checkout."""
    given = data or os.environ.get("RFAU_CIFAR10")
    if given:
        if not Path(given).exists():
            raise RfauError(f"CIFAR-10 not found at {given!r} (from --data or RFAU_CIFAR10)")
        return given
    for root in (Path.cwd().parent, Path(__file__).resolve().parents[2]):
        c = root / "shared" / "datasets" / "cifar10" / CIFAR_ARCHIVE
        if c.exists():
            return str(c)
    raise RfauError("CIFAR-10 not found: pass --data PATH (ImageFolder dir or archive) or set RFAU_CIFAR10")


def load_bench_dataset(cfg: BenchConfig, data: str | None) -> ImageDataset:
    if cfg.dataset == "digits":
        ds = load_dataset("digits")
    elif cfg.dataset == FASHION_MNIST:
        ds = load_fashion_mnist(find_fashion_mnist(data))
    elif is_fortunes_source(cfg.dataset):  # text: --data names a fortunes folder
        from rfau.data.text import TextDataset, subset_text_dataset

        ds = load_dataset(f"fortunes:{data}" if data else cfg.dataset)
        assert isinstance(ds, TextDataset)
        return subset_text_dataset(ds, cfg.train_per_class, cfg.test_per_class)
    else:
        ds = load_dataset(find_cifar10(data))
    return subset_dataset(ds, cfg.train_per_class, cfg.test_per_class)


def scenario_request(
    ds: ImageDataset, scenario: str, out_dir: Path, seed: int, original: Path, salt: str
) -> Path:
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
                    **{k: m[k] for k in ROW_METRICS},
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
            ref = next(r for r in srows if r["method"] == "retrain")
            for r in srows:
                r["avg_gap"] = avg_gap(r, ref, GAP_METRICS)
                r["js_to_retrain"] = js_divergence(logits[r["method"]], logits["retrain"])
                r["act_dist_to_retrain"] = activation_distance(logits[r["method"]], logits["retrain"])
            rows.extend(srows)
            _mia_histogram(ds, split, sdir, out / f"mia_hist_{scenario}.png", seed)
            write_outputs(cfg, rows, out, ds)  # after every scenario: a cut-off run keeps what it finished
    return rows


def method_settings(cfg: BenchConfig, method: str, seed: int, device: str) -> dict:
    """A method's settings in a bench run of ``seed`` (the noise floor retrains with another seed;
    the original takes none)."""
    if method == "original":
        return {}
    runs_as = "retrain" if method == NOISE_FLOOR else method
    offset = RETRAIN_2_SEED_OFFSET if method == NOISE_FLOOR else 0
    return {**cfg.methods[runs_as], "seed": seed + offset, "device": device}


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


def _own_spread(key: str) -> bool:
    """A metric's own spread stored as ``<metric>_std`` (the member rate's binomial std)."""
    return key.endswith("_std") and key.removesuffix("_std") in EVIDENCE_KEYS


AGG_KEYS = (
    "ua",
    "ra",
    "ta",
    "ta_forget_sample_classes",
    "mia_confidence",
    "mia_entropy",
    "mia_loss_threshold",
    "js_to_retrain",
    # the evidence metrics, without their own spreads named like a seed spread (the member rate's
    # binomial ``_std`` would overwrite the spread over seeds that the tables show)
    *(k for k in EVIDENCE_KEYS if not k.endswith("_n") and not _own_spread(k)),
    *(k for k in CLASSWISE_KEYS if not k.endswith("_n") and not k.endswith("_std")),
    "gates_passed",
    "avg_gap",
    "seconds",
    "peak_rss_mb",
    "cuda_rise_mb",
    "original_train_acc",
    "original_test_acc",
)


def _mean_std(vals: list) -> tuple[float | None, float | None]:
    """Mean and std over seeds of the values that exist (a metric may not apply: None/NaN)."""
    present = [float(v) for v in vals if v is not None and not math.isnan(float(v))]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["method"]), []).append(r)
    out = []
    for (scenario, method), rs in groups.items():
        agg = {
            "scenario": scenario,
            "method": method,
            "n": len(rs),
            "trainable_params": rs[0]["trainable_params"],
            "total_params": rs[0]["total_params"],
        }
        for k in AGG_KEYS:
            agg[k], agg[k + "_std"] = _mean_std([r.get(k) for r in rs])
        out.append(agg)
    return out


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores"
    return f"{dev}; {platform.processor() or platform.machine()}; torch {torch.__version__}"


def public_name(name: str) -> str:
    """A dataset name without the machine's folders: absolute paths shortened to their file name."""
    return re.sub(r"(?<![\w.])/(?:[^/\s\[\]]+/)*([^/\s\[\]]+)", r"\1", name)


# (column title, aggregate key, decimals); "floor" = the retrain_2 row, drawn as a line in the plots
TABLE_COLUMNS = (
    ("UA", "ua", 2),
    ("RA", "ra", 2),
    ("TA", "ta", 2),
    ("TA forget classes", "ta_forget_sample_classes", 2),
    ("MIA conf.", "mia_confidence", 2),
    ("AUC vs unseen", "forget_vs_unseen_auc", 3),
    ("AUC vs test", "forget_vs_test_auc", 3),
    ("member @10% FPR", "forget_member_rate_at_10fpr", 1),
    ("relearn steps", "relearn_steps", 1),
    ("probe acc.", "probe_forgotten_class_acc", 1),
    ("avg gap", "avg_gap", 2),
    ("seconds", "seconds", 2),
    # the process's peak resident memory during the method's stage (data and libraries included)
    ("peak RSS MB", "peak_rss_mb", 0),
)
# on CUDA: what the stage itself needed (the rise of max allocated memory over its start, the
# method's libraries loaded first). On the CPU no such column: in one process the RSS rise mostly
# measures what the allocator kept from earlier methods (measured on Fashion-MNIST: retrain 1 MB
# after finetune and RFAU had run in the same process, 186 MB in a fresh one), so it is not reported.
CUDA_COLUMN = ("CUDA MB", "cuda_rise_mb", 0)


def table_columns(agg: list[dict]) -> tuple[tuple[str, str, int], ...]:
    return TABLE_COLUMNS + ((CUDA_COLUMN,) if any(a.get("cuda_rise_mb") is not None for a in agg) else ())


def _cell(a: dict, key: str, decimals: int) -> str:
    if a.get(key) is None:
        return "–"
    text = f"{a[key]:.{decimals}f}"
    return text + (f" ± {a[key + '_std']:.{decimals}f}" if a["n"] > 1 else "")


def markdown_table(cfg: BenchConfig, agg: list[dict], ds_name: str) -> str:
    orig = [a for a in agg if a["method"] == "original" and a.get("original_train_acc") is not None][:1]
    columns = table_columns(agg)
    lines = [
        f"### `rfau bench {cfg.name}` ({len(cfg.seeds)} seed(s)) on {machine()}",
        "",
        f"Data: {public_name(ds_name)}. Percent except seconds, AUCs and steps; avg gap = mean "
        "|x - retrain| over UA, RA, TA, MIA-efficacy (confidence). `retrain_2` is a second retrain "
        "with another seed: its gap is the noise floor. AUC: forget vs unseen samples of the same "
        "classes (0.5 = looks unseen); member @10% FPR: 10 = looks unseen; relearn steps: "
        "fine-tuning steps on the forget set until the original's accuracy is back; probe acc.: "
        "a linear probe on the penultimate features, on the forgotten class (class-wise only).",
        "",
    ]
    if orig:
        o = orig[0]
        lines += [
            f"Original: train accuracy {_cell(o, 'original_train_acc', 2)}, test accuracy "
            f"{_cell(o, 'original_test_acc', 2)} (memorisation gap "
            f"{o['original_train_acc'] - o['original_test_acc']:.2f} points).",
            "",
        ]
    lines += _paper_note(cfg, agg)
    for scenario in dict.fromkeys(a["scenario"] for a in agg):
        lines += [
            f"**{scenario}**",
            "",
            "| method | " + " | ".join(t for t, _, _ in columns) + " | trainable % |",
            "|---|" + "---|" * (len(columns) + 1),
        ]
        for a in sorted((a for a in agg if a["scenario"] == scenario), key=lambda a: a["avg_gap"]):
            share = 100 * a["trainable_params"] / a["total_params"]
            name = f"{a['method']} (noise floor)" if a["method"] == NOISE_FLOOR else a["method"]
            cells = " | ".join(_cell(a, k, d) for _, k, d in columns)
            lines.append(f"| {name} | {cells} | {share:.2f} |")
        lines.append("")
    return "\n".join(lines)


# The RFAU paper's own Fashion-MNIST numbers (its model, all 60,000 training images)
PAPER_FASHION_MNIST_FORGET_ACC = 99.22  # forget-set accuracy after sample unlearning, percent
PAPER_FASHION_MNIST_ACT_DIST = 1.36  # activation distance on the retained set, class unlearning


def _paper_note(cfg: BenchConfig, agg: list[dict]) -> list[str]:
    """Beside the Fashion-MNIST table: the paper's numbers and ours where they compare."""
    if cfg.dataset != FASHION_MNIST:
        return []
    ours = next((a for a in agg if a["method"] == "rfau" and a["scenario"] == "random"), None)
    mine = f"{100 - ours['ua']:.2f}%" if ours and ours.get("ua") is not None else "not run"
    return [
        f"RFAU paper, Fashion-MNIST (its own model, all 60,000 training images): forget-set accuracy "
        f"{PAPER_FASHION_MNIST_FORGET_ACC}% after sample unlearning; here (rfau, 10% random, this "
        f"subset): {mine} (100 - UA). The paper's activation distance on the retained set after class "
        f"unlearning ({PAPER_FASHION_MNIST_ACT_DIST}) is on a scale its text does not define, so it is "
        "not compared; rows.csv has `act_dist_to_retrain` (mean L2 distance of softmax outputs to "
        "retrain's on the forget set, at most 1.41).",
        "",
    ]


def write_outputs(cfg: BenchConfig, rows: list[dict], out: Path, ds: ImageDataset) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    agg = aggregate(rows)
    (out / "table.md").write_text(markdown_table(cfg, agg, ds.name) + "\n")
    write_gate_table(out / "gates.md", cfg.name, rows, machine())
    write_json(
        out / "bench.json",
        {
            "config": cfg.model_dump(),
            "holdout_salts": {seed: holdout_salt(seed) for seed in cfg.seeds},
            "machine": machine(),
            "aggregate": agg,
        },
    )
    for scenario in dict.fromkeys(a["scenario"] for a in agg):
        fig, ax = plt.subplots(figsize=(6, 4))
        for a in (a for a in agg if a["scenario"] == scenario):
            if a["method"] == NOISE_FLOOR:
                ax.axhline(a["avg_gap"], color="grey", linestyle="--", label="noise floor (retrain_2)")
                continue
            ax.errorbar(a["seconds"], a["avg_gap"], xerr=a["seconds_std"], yerr=a["avg_gap_std"], fmt="o")
            ax.annotate(a["method"], (a["seconds"], a["avg_gap"]), textcoords="offset points", xytext=(4, 4))
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("wall seconds (unlearning)")
        ax.set_ylabel("avg gap to retrain (lower is better)")
        ax.set_title(f"{cfg.name}: {scenario}")
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(out / f"gap_vs_time_{scenario}.png", dpi=110)
        plt.close(fig)


__all__ = ["CONFIGS", "NOISE_FLOOR", "SCENARIOS", "BenchConfig", "public_name", "run_bench"]
