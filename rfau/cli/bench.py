"""Benchmark commands (top-level): bench, bench-memory. A module of their own: rfau.bench loads
scikit-learn and pandas, which the other experiment commands never need."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown

from rfau.bench import CONFIGS, SCENARIOS, aggregate, markdown_table, run_bench
from rfau.bench.configs import check_bench_data
from rfau.bench.gates import gate_table
from rfau.bench.memory import memory_rises, memory_table
from rfau.cli.common import DeviceOpt, JsonOpt, RfauTyper, emit, out
from rfau.errors import UsageError
from rfau.io import claim_output, reuse_dir

# each command is a top-level `rfau NAME` (rfau.cli.COMMANDS)
bench_app = RfauTyper()


def is_bench_folder(folder: Path) -> bool:
    """A results folder of `rfau bench` from before output folders were marked."""
    return (folder / "bench.json").is_file()


@bench_app.command()
def bench(
    config: Annotated[
        str,
        typer.Argument(
            help="digits (CPU, minutes), fashion-mnist (CPU), cifar10-small (CPU), text-minilm (CPU, "
            "`make text`) or cifar10 (GPU); their sizes and run times: docs/benchmarks.md."
        ),
    ],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "--output", "-o", help="Results folder (default: results/<config>)."),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="CIFAR-10 ImageFolder dir or archive (else RFAU_CIFAR10 or ../shared).")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated subset of methods (retrain is always run).")
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Number of seeds (default by config).")] = None,
    scenarios: Annotated[str | None, typer.Option(help="Comma-separated: class, random, structured.")] = None,
    max_train_per_class: Annotated[
        int | None, typer.Option(help="Size limit: training samples per class.")
    ] = None,
    max_test_per_class: Annotated[
        int | None, typer.Option(help="Size limit: test samples per class.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Override the original/retrain epochs (size limit).")
    ] = None,
    device: DeviceOpt = "auto",
    reuse: Annotated[
        bool, typer.Option(help="Reuse the original and retrain models of an earlier run in --out.")
    ] = False,
    noise_floor: Annotated[
        bool,
        typer.Option(help="Run the second retrain (retrain_2, the noise floor); off: cheaper gate tables."),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark every method against retrain and do-nothing; writes CSV, Markdown and plots."""
    if config not in CONFIGS:
        raise UsageError(f"unknown bench config {config!r}; known: {', '.join(CONFIGS)}")
    cfg = CONFIGS[config]
    out_dir = out_dir or Path("results") / config
    claim_output(out_dir, "bench", is_bench_folder)
    upd: dict = {}
    if seeds:
        upd["seeds"] = tuple(range(seeds))
    if scenarios:
        upd["scenarios"] = tuple(s.strip() for s in scenarios.split(","))
        if not set(upd["scenarios"]) <= set(SCENARIOS):
            raise UsageError(f"--scenarios must name some of {', '.join(SCENARIOS)}, got {scenarios!r}")
    if max_train_per_class:
        upd["train_per_class"] = max_train_per_class
    if max_test_per_class:
        upd["test_per_class"] = max_test_per_class
    if epochs:
        upd["train"] = cfg.train.model_copy(update={"epochs": epochs})
    cfg = cfg.model_copy(update=upd)
    check_bench_data(cfg, data)  # a missing dataset leaves no output folder behind
    reuse_dir(out_dir, "bench", is_bench_folder)
    rows = run_bench(cfg, out_dir, data, methods.split(",") if methods else None, device, reuse, noise_floor)
    if as_json:
        emit(as_json, {"config": config, "out": out_dir, "aggregate": aggregate(rows), "rows": rows})
        return
    out.print(Markdown(markdown_table(cfg, aggregate(rows), rows[0]["config"])))
    out.print(Markdown(gate_table(cfg.name, rows, "this machine")))
    out.print(
        f"results in {out_dir}/ (rows.csv, table.md, gates.md, bench.json, gap_vs_time_*.png, mia_hist_*.png)"
    )


@bench_app.command("bench-memory")
def bench_memory(
    out_dir: Annotated[Path, typer.Argument(help="The --out folder of a finished `rfau bench` run.")],
    data: Annotated[
        str | None, typer.Option(help="The dataset as given to that run (CIFAR-10 / Fashion-MNIST path).")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated methods, each in its own fresh process (default: original,finetune,rfau)."
        ),
    ] = None,
    scenarios: Annotated[str | None, typer.Option(help="Comma-separated (default: the run's).")] = None,
    seed: Annotated[int, typer.Option(help="Which seed's saved originals and splits.")] = 0,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Memory each method's unlearn stage needs: a fresh process per method over a bench run's
    saved models (RSS rise above the loaded data; CUDA rise on a GPU); writes memory.json/.md."""
    claim_output(out_dir, "bench", is_bench_folder)  # it adds memory.json/.md to a bench folder
    rows = memory_rises(
        out_dir,
        data,
        [m.strip() for m in methods.split(",") if m.strip()] if methods else None,
        [s.strip() for s in scenarios.split(",")] if scenarios else None,
        seed,
        device,
    )
    if as_json:
        emit(as_json, {"out": out_dir, "rows": rows})
        return
    out.print(Markdown(memory_table(rows)))
    out.print(f"results in {out_dir}/memory.json, memory.md")
