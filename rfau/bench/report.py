"""The bench's outputs: aggregates over seeds, table.md, gates.md, bench.json and the plots."""

from __future__ import annotations

import csv
import math
import os
import platform
import re
import statistics
from pathlib import Path

import torch

from rfau.bench.configs import NOISE_FLOOR, BenchConfig, holdout_salt
from rfau.bench.gates import write_gate_table
from rfau.data.base import Dataset
from rfau.data.datasets import FASHION_MNIST
from rfau.io import write_json
from rfau.metrics.classwise import CLASSWISE_KEYS
from rfau.metrics.evidence import EVIDENCE_KEYS


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
    "certified_seconds",
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
    # the default gates with the original as champion: pass rate over seeds, and the time to a
    # certified deletion along the ladder [method, retrain] (rfau.bench.gates.certified_seconds)
    ("gates pass %", "gates_passed", 0),
    ("s to certified", "certified_seconds", 2),
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


def write_outputs(cfg: BenchConfig, rows: list[dict], out: Path, ds: Dataset) -> None:
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
