"""``rfau bench-memory``: the memory each method's unlearn stage needs, each in a fresh process.

Inside one ``rfau bench`` process the RSS a method adds mostly measures what the allocator kept
from the methods before it, so the bench reports the process's peak (``peak_rss_mb``) and no CPU
rise. Here every (scenario, method) runs alone in a new interpreter, on the originals and splits
that a ``rfau bench --out DIR`` run saved in ``DIR/work`` and with that run's settings (its
``bench.json``): the data and the method's libraries are loaded first, then the stage's peak RSS
above that baseline is what the method needed (``rss_rise_mb``: its model copies, cached
features, activations, gradients and optimizer state; loading the checkpoint counts for every
method alike). On CUDA the rise of max allocated memory is reported too, as in the bench.
Outputs: ``DIR/memory.json`` and ``DIR/memory.md``.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import tempfile
from pathlib import Path

import psutil

from rfau.bench.configs import BenchConfig, load_bench_dataset, method_settings
from rfau.errors import UsageError
from rfau.io import write_json
from rfau.methods import get_method
from rfau.methods.runner import load_libraries
from rfau.metrics.efficiency import measure
from rfau.models.card import read_card
from rfau.models.families import get_family
from rfau.stages import unlearn_stage

REFERENCE = "finetune"  # issue 11's memory target: RFAU at most 0.6 x finetune's rise


def memory_rises(
    out_dir: Path,
    data: str | None = None,
    methods: list[str] | None = None,
    scenarios: list[str] | None = None,
    seed: int = 0,
    device: str = "auto",
) -> list[dict]:
    """One fresh process per (scenario, method) over ``out_dir``'s saved bench run; writes
    memory.json and memory.md there and returns the rows."""
    meta = Path(out_dir) / "bench.json"
    if not meta.is_file():
        raise UsageError(
            f"{out_dir} holds no bench run (no bench.json): run `rfau bench CONFIG --out {out_dir}`"
        )
    cfg = BenchConfig(**json.loads(meta.read_text())["config"])
    methods = methods or ["original", REFERENCE, "rfau"]
    unknown = sorted(set(methods) - set(cfg.methods))
    if unknown:
        raise UsageError(f"unknown methods for bench {cfg.name!r}: {unknown}")
    scenarios = scenarios or list(cfg.scenarios)
    seed_dir = Path(out_dir) / "work" / f"seed{seed}"
    orig = seed_dir / "original"
    for scenario in scenarios:
        if not (seed_dir / scenario / "split" / "split.json").is_file():
            raise UsageError(f"{out_dir} has no seed-{seed} {scenario!r} split: run that bench first")
    if not (orig / "model.json").is_file():
        raise UsageError(f"{out_dir} has no seed-{seed} original model")
    rows = []
    ctx = multiprocessing.get_context("spawn")  # a new interpreter: no allocator state carried over
    for scenario in scenarios:
        sdir = seed_dir / scenario
        for method in methods:
            settings = method_settings(cfg, method, seed, device)
            pool = ctx.Pool(1)
            try:
                r = pool.apply(_rise, (cfg.model_dump(), data, str(orig), str(sdir), method, settings))
            finally:  # let the worker exit on its own (a terminated one leaks its semaphores)
                pool.close()
                pool.join()
            rows.append({"config": cfg.name, "scenario": scenario, "seed": seed, "method": method, **r})
    write_json(Path(out_dir) / "memory.json", {"rows": rows})
    (Path(out_dir) / "memory.md").write_text(memory_table(rows) + "\n")
    return rows


def _rise(cfg_dump: dict, data: str | None, orig: str, sdir: str, method: str, settings: dict) -> dict:
    """In the fresh process: load what every method needs, then measure the stage alone."""
    card = read_card(orig)
    ds = get_family(card.family).prepare_dataset(load_bench_dataset(BenchConfig(**cfg_dump), data), card)
    load_libraries(get_method(method))
    gc.collect()
    base = psutil.Process().memory_info().rss / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        with measure() as cost:
            info = unlearn_stage(orig, ds, Path(sdir) / "split", Path(tmp) / "model", method, settings)
    return {
        "baseline_rss_mb": base,
        "peak_rss_mb": cost["peak_rss_mb"],
        "rss_rise_mb": cost["peak_rss_mb"] - base,
        "cuda_rise_mb": cost["cuda_rise_mb"],
        "seconds": info.seconds,
        "trainable_params": info.trainable_params,
        "total_params": info.total_params,
    }


def memory_table(rows: list[dict]) -> str:
    """Markdown: each row's rise, and its ratio to the reference method's in the same scenario."""
    ref = {r["scenario"]: r for r in rows if r["method"] == REFERENCE}
    lines = [
        "| scenario | method | RSS rise MB | x finetune's | baseline RSS MB | CUDA rise MB | seconds "
        "| trainable % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = ref.get(r["scenario"])
        ratio = f"{r['rss_rise_mb'] / base['rss_rise_mb']:.2f}" if base and base["rss_rise_mb"] > 0 else "-"
        cuda = "-" if r["cuda_rise_mb"] is None else f"{r['cuda_rise_mb']:.0f}"
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['rss_rise_mb']:.0f} | {ratio} "
            f"| {r['baseline_rss_mb']:.0f} | {cuda} | {r['seconds']:.2f} "
            f"| {100 * r['trainable_params'] / r['total_params']:.2f} |"
        )
    return "\n".join(lines)
