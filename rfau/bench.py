"""``rfau bench``: every method against retrain and do-nothing, in one run, on one machine.

For each seed: train the original once; for each scenario (one whole class, 10% random samples)
make the request, split, run every method through the same unlearn stage, evaluate, and compare
with retrain. Outputs: rows.csv (one row per seed x scenario x method), table.md (mean +- std
over seeds), plots, and bench.json (machine, settings).
"""

from __future__ import annotations

import csv
import os
import platform
import statistics
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from rfau.config import TrainConfig
from rfau.data.datasets import ImageDataset, load_dataset, subset_dataset
from rfau.data.split import read_split
from rfau.errors import RfauError
from rfau.io import read_json, write_json
from rfau.job import demo_request
from rfau.metrics import GAP_METRICS, avg_gap, evaluate_model
from rfau.metrics.distance import activation_distance, js_divergence, loss_threshold_mia
from rfau.metrics.efficiency import measure
from rfau.metrics.plots import confidence_histogram
from rfau.models.checkpoint import load_checkpoint
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


class BenchConfig(BaseModel):
    name: str
    dataset: str  # "digits" or "cifar10" (found via --data / RFAU_CIFAR10 / ../shared)
    train_per_class: int | None = None
    test_per_class: int | None = None
    train: TrainConfig
    methods: dict[str, dict] = Field(default_factory=dict)  # method -> settings
    scenarios: tuple[str, ...] = ("class", "random")
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
    source = "digits" if cfg.dataset == "digits" else find_cifar10(data)
    return subset_dataset(load_dataset(source), cfg.train_per_class, cfg.test_per_class)


def run_bench(
    cfg: BenchConfig,
    out_dir: str | Path,
    data: str | None = None,
    methods: list[str] | None = None,
    device: str = "auto",
    reuse: bool = False,
) -> list[dict]:
    """``reuse``: keep an earlier run's original and retrain models in ``out_dir`` (for tuning a
    method without paying for the references again); their seconds are the earlier run's."""
    out = Path(out_dir)
    methods = methods or [m for m in ALL_METHODS if m in cfg.methods]
    unknown = set(methods) - set(cfg.methods)
    if unknown:
        raise RfauError(f"unknown methods for bench {cfg.name!r}: {sorted(unknown)}")
    if "retrain" not in methods:
        methods = ["retrain", *methods]  # the gap needs the gold standard
    ds = load_bench_dataset(cfg, data)
    rows: list[dict] = []
    work = out / "work"
    for seed in cfg.seeds:
        orig = work / f"seed{seed}" / "original"
        tcfg = cfg.train.model_copy(update={"seed": seed, "device": device})
        if reuse and _card_matches(orig, tcfg):
            original_seconds = float("nan")
        else:
            with measure() as cost:
                train_stage(ds, orig, tcfg)
            original_seconds = cost["seconds"]
        for scenario in cfg.scenarios:
            sdir = work / f"seed{seed}" / scenario
            req = demo_request(ds, scenario, sdir / "requests", seed=seed)
            split_stage(ds, [req], sdir / "split")
            split = read_split(sdir / "split")
            logits = {}
            srows = []
            for method in methods:
                settings = {**cfg.methods[method], "seed": seed, "device": device}
                if method == "original":
                    settings = {}
                mdir = sdir / method
                if reuse and method in ("original", "retrain") and (mdir / "unlearn.json").exists():
                    info = read_json(mdir / "unlearn.json")  # an earlier run's reference model
                    cost = {"seconds": info["seconds"], "peak_rss_mb": float("nan"), "peak_cuda_mb": None}
                else:
                    with measure() as cost:
                        info = unlearn_stage(orig, ds, sdir / "split", mdir, method, settings)
                model, _ = load_checkpoint(mdir)
                out_logits: dict = {}
                m = evaluate_model(model, ds, split, seed=seed, logits_out=out_logits)
                f_idx, r_idx, t_idx = (ds.indices(getattr(split, k)) for k in ("forget", "retain", "test"))
                lf, lr, lt = (out_logits[k] for k in ("forget", "retain", "test"))
                logits[method] = lf
                row = {
                    "config": cfg.name,
                    "scenario": scenario,
                    "seed": seed,
                    "method": method,
                    **{
                        k: m[k]
                        for k in ("ua", "ra", "ta", "ta_kept_classes", "mia_confidence", "mia_entropy")
                    },
                    "mia_loss_threshold": loss_threshold_mia(
                        lr, ds.y[r_idx], lt, ds.y[t_idx], lf, ds.y[f_idx]
                    ),
                    "seconds": info["seconds"],
                    "stage_seconds": cost["seconds"],
                    "trainable_params": info["trainable_params"],
                    "total_params": info["total_params"],
                    "peak_rss_mb": cost["peak_rss_mb"],
                    "peak_cuda_mb": cost["peak_cuda_mb"],
                    "samples_per_s": (len(split.retain) + len(split.forget)) / max(info["seconds"], 1e-9)
                    if method != "original"
                    else None,
                    "original_train_seconds": original_seconds,
                    "forget": len(split.forget),
                }
                srows.append(row)
            ref = next(r for r in srows if r["method"] == "retrain")
            for r in srows:
                r["avg_gap"] = avg_gap(r, ref, GAP_METRICS)
                r["js_to_retrain"] = js_divergence(logits[r["method"]], logits["retrain"])
                r["act_dist_to_retrain"] = activation_distance(logits[r["method"]], logits["retrain"])
            rows.extend(srows)
            _mia_histogram(ds, split, sdir, out / f"mia_hist_{scenario}.png", seed)
    write_outputs(cfg, rows, out, ds)
    return rows


def _card_matches(model_dir: Path, cfg: TrainConfig) -> bool:
    card = model_dir / "model.json"
    return card.exists() and read_json(card)["lineage"].get("train_config") == cfg.model_dump()


def _mia_histogram(ds, split, sdir: Path, path: Path, seed: int) -> None:
    if seed != 0 and path.exists():
        return
    names = [n for n in ("original", "retrain", "rfau") if (sdir / n / "model.json").exists()]
    confidence_histogram(ds, split, {n: sdir / n for n in names}, path)


def aggregate(rows: list[dict]) -> list[dict]:
    keys = (
        "ua",
        "ra",
        "ta",
        "mia_confidence",
        "mia_entropy",
        "mia_loss_threshold",
        "js_to_retrain",
        "avg_gap",
        "seconds",
    )
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
        for k in keys:
            vals = [r[k] for r in rs]
            agg[k] = statistics.fmean(vals)
            agg[k + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(agg)
    return out


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores"
    return f"{dev}; {platform.processor() or platform.machine()}; torch {torch.__version__}"


def markdown_table(cfg: BenchConfig, agg: list[dict], ds_name: str) -> str:
    pm = lambda a, k: f"{a[k]:.2f}" + (f" ± {a[k + '_std']:.2f}" if a["n"] > 1 else "")  # noqa: E731
    lines = [
        f"### `rfau bench {cfg.name}` ({len(cfg.seeds)} seed(s)) on {machine()}",
        "",
        f"Data: {ds_name}. Percent except seconds; avg gap = mean |x - retrain| over UA, RA, TA, "
        "MIA-efficacy (confidence).",
        "",
    ]
    for scenario in dict.fromkeys(a["scenario"] for a in agg):
        lines += [
            f"**{scenario}**",
            "",
            "| method | UA | RA | TA | MIA conf. | MIA entr. | MIA loss-thr. | JS to retrain "
            "| avg gap | seconds | trainable % |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for a in sorted((a for a in agg if a["scenario"] == scenario), key=lambda a: a["avg_gap"]):
            share = 100 * a["trainable_params"] / a["total_params"]
            lines.append(
                f"| {a['method']} | {pm(a, 'ua')} | {pm(a, 'ra')} | {pm(a, 'ta')} | "
                f"{pm(a, 'mia_confidence')} | "
                f"{pm(a, 'mia_entropy')} | {pm(a, 'mia_loss_threshold')} | {a['js_to_retrain']:.4f} | "
                f"{pm(a, 'avg_gap')} | {pm(a, 'seconds')} | {share:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


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
    write_json(out / "bench.json", {"config": cfg.model_dump(), "machine": machine(), "aggregate": agg})
    for scenario in dict.fromkeys(a["scenario"] for a in agg):
        fig, ax = plt.subplots(figsize=(6, 4))
        for a in (a for a in agg if a["scenario"] == scenario):
            ax.errorbar(a["seconds"], a["avg_gap"], xerr=a["seconds_std"], yerr=a["avg_gap_std"], fmt="o")
            ax.annotate(a["method"], (a["seconds"], a["avg_gap"]), textcoords="offset points", xytext=(4, 4))
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("wall seconds (unlearning)")
        ax.set_ylabel("avg gap to retrain (lower is better)")
        ax.set_title(f"{cfg.name}: {scenario}")
        fig.tight_layout()
        fig.savefig(out / f"gap_vs_time_{scenario}.png", dpi=110)
        plt.close(fig)


__all__ = ["CONFIGS", "BenchConfig", "run_bench"]
