"""Experiment commands: split, train, unlearn, evaluate, methods, run, bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rfau.cli.common import (
    DatasetOpt,
    DeviceOpt,
    JsonOpt,
    SeedOpt,
    SplitOpt,
    app,
    check_method_settings,
    emit,
    out,
    parse_overrides,
)
from rfau.cli.render import print_summary
from rfau.config import TrainConfig
from rfau.errors import UsageError
from rfau.io import claim_output, claim_output_file, reuse_dir


@app.command()
def split(
    requests: Annotated[list[Path], typer.Argument(help="Deletion request JSON files or folders of them.")],
    out_dir: Annotated[
        Path, typer.Option("--out", "--output", "-o", help="Folder for retain/forget/holdout/test manifests.")
    ],
    dataset: DatasetOpt = "digits",
    holdout_fraction: Annotated[
        float,
        typer.Option(help="Share of the training split held out for calibration; must match the model's."),
    ] = 0.1,
    as_json: JsonOpt = False,
) -> None:
    """Validate deletion requests and write the retain/forget/holdout/test manifests."""
    from rfau.stages import split_stage

    claim_output(out_dir, "split")

    summary = split_stage(dataset, list(requests), out_dir, holdout_fraction).summary()
    emit(as_json, summary, lambda: out.print_json(data=summary))


@app.command()
def train(
    out_dir: Annotated[
        Path, typer.Option("--out", "--output", "-o", help="Folder for model.safetensors + model.json.")
    ],
    dataset: DatasetOpt = "digits",
    split_dir: Annotated[
        Path | None,
        typer.Option(
            "--split",
            help="Train on this split's retain set (retrain); default: the original model on all "
            "training data minus the holdout.",
        ),
    ] = None,
    architecture: Annotated[
        str | None, typer.Option(help="small_cnn or resnet18 (default by dataset).")
    ] = None,
    width: Annotated[int | None, typer.Option(help="Base channel width (default by architecture).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default by dataset).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default by dataset).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate of the one-cycle schedule.")] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Train a model: the original (bootstrap) or, with --split, a retrained reference."""
    from rfau.data import load_dataset
    from rfau.stages import train_stage

    claim_output(out_dir, "train")

    ds = load_dataset(dataset)
    cfg = TrainConfig.preset(
        ds.kind,
        architecture=architecture,
        width=width,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
    )
    card = train_stage(ds, out_dir, cfg, split_dir)
    emit(
        as_json,
        card,
        lambda: out.print(
            f"trained {card.architecture} on {card.train_samples} samples: "
            f"RA {card.metrics['ra']:.2f}%  TA {card.metrics['ta']:.2f}%  -> {out_dir}"
        ),
    )


@app.command()
def unlearn(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Folder of the model to unlearn from.")],
    split_dir: SplitOpt,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            "--output",
            "-o",
            help="Folder for the merged weights, model card, adapter/ and unlearn.json.",
        ),
    ],
    dataset: DatasetOpt = "digits",
    method: Annotated[str, typer.Option(help="Unlearning method (see `rfau methods`).")] = "rfau",
    config: Annotated[Path | None, typer.Option(help="JSON file with method settings.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Method setting KEY=VALUE, e.g. --set rank=8 --set regime=sample."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove the split's forget set from a model (RFAU by default)."""
    from rfau.stages import unlearn_stage

    claim_output(out_dir, "unlearn")
    settings = parse_overrides(config, set_)
    check_method_settings(method, settings)  # before the model and the data are read
    info = unlearn_stage(model_dir, dataset, split_dir, out_dir, method, settings)
    emit(
        as_json,
        info,
        lambda: out.print(
            f"{method}: {info.seconds:.1f} s, trainable parameters {info.trainable_params:,} of "
            f"{info.total_params:,} ({100 * info.trainable_share:.2f}%) -> {out_dir}"
        ),
    )


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder to evaluate.")],
    split_dir: SplitOpt,
    out_path: Annotated[Path, typer.Option("--out", "--output", "-o", help="Metrics JSON file to write.")],
    dataset: DatasetOpt = "digits",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """UA, RA, TA, per-class accuracy and MIA-efficacy of a model on a split.

    Prints a table of the headline metrics; --out and --json hold all of them."""
    from rfau.stages import evaluate_stage, is_evaluation

    claim_output_file(out_path, "evaluate", is_evaluation)
    m = evaluate_stage(model_dir, dataset, split_dir, out_path, seed)
    emit(as_json, m, lambda: out.print(_metrics_table(m, model_dir)))


def is_bench_folder(folder: Path) -> bool:
    """A results folder of `rfau bench` from before output folders were marked."""
    return (folder / "bench.json").is_file()


def _metrics_table(m, model_dir: Path) -> Table:
    t = Table(title=f"{model_dir} ({m.regime} forgetting; percent)")
    for col in ("UA", "RA", "TA", "TA kept cl.", "MIA conf.", "MIA entr."):
        t.add_column(col, justify="right")
    t.add_row(*(f"{v:.2f}" for v in (m.ua, m.ra, m.ta, m.ta_kept_classes, m.mia_confidence, m.mia_entropy)))
    return t


@app.command()
def methods(
    name: Annotated[str | None, typer.Argument(help="A method: print its settings with their help.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the unlearning methods, or one method's settings (`rfau methods rfau`)."""
    from rfau.methods import METHODS, get_method, settings_help

    if as_json:
        data = (
            [{"method": key, "summary": m.summary} for key, m in METHODS.items()]
            if name is None
            else {"method": name, "summary": get_method(name).summary, "settings": settings_help(name)}
        )
        emit(as_json, data)
        return
    if name is None:
        t = Table("method", "what it does")
        for key, m in METHODS.items():
            t.add_row(key, m.summary)
        out.print(t)
        return
    method = get_method(name)
    t = Table("setting", "type", "default", "allowed", "what it does", title=f"{name}: {method.summary}")
    for st in settings_help(name):
        t.add_row(st.name, st.type, repr(st.default), st.constraints, st.description)
    out.print(t)
    out.print(f"set with --set KEY=VALUE (e.g. `rfau unlearn ... --method {name} --set seed=1`)")


@app.command()
def run(
    dataset: DatasetOpt = "digits",
    requests: Annotated[
        list[Path] | None,
        typer.Option(
            "--requests", "-r", help="Deletion request files/folders; default: a demo request for --scenario."
        ),
    ] = None,
    scenario: Annotated[
        str,
        typer.Option(
            help="Demo request when none is given: 'random' (10% of training samples) or 'class' (one class)."
        ),
    ] = "random",
    model_dir: Annotated[
        Path | None, typer.Option("--model", "-m", help="Original model folder; default: train one.")
    ] = None,
    workdir: Annotated[
        Path, typer.Option("--workdir", "-w", help="Where every stage writes its outputs.")
    ] = Path("runs/latest"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="RFAU setting KEY=VALUE.")] = None,
    retrain: Annotated[bool, typer.Option(help="Also retrain from scratch as the gold standard.")] = True,
    track: Annotated[
        bool,
        typer.Option(
            help="Keep the run's MLflow runs and registry (WORKDIR/state, its own: never the batches') "
            "and show the registered version."
        ),
    ] = True,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """The experiment: a deletion batch on a throwaway store and registry (bootstrap the original,
    unlearn with RFAU, evaluate, register behind the gates), then retrain, then a table."""
    from rfau.job import RUN, is_run_folder, run_job

    claim_output(workdir, RUN, is_run_folder)
    if scenario not in ("random", "class"):
        raise UsageError(f"--scenario must be 'random' or 'class', got {scenario!r}")
    summary = run_job(
        dataset,
        workdir,
        requests,
        scenario,
        model_dir,
        parse_overrides(None, set_),
        retrain=retrain,
        seed=seed,
        track=track,
    )
    if as_json:
        emit(as_json, summary)
        return
    print_summary(summary)
    out.print(
        f"outputs in {workdir}/ (summary.json, batch/batch/split, batch/batch/base: the original, "
        "rfau/adapter, retrain/, metrics/" + (", state/: its MLflow registry)" if track else ")")
    )


@app.command()
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
    from rfau.bench import CONFIGS, aggregate, markdown_table, run_bench
    from rfau.bench.configs import check_bench_data

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
        from rfau.bench import SCENARIOS

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
    from rich.markdown import Markdown

    out.print(Markdown(markdown_table(cfg, aggregate(rows), rows[0]["config"])))
    from rfau.bench.gates import gate_table

    out.print(Markdown(gate_table(cfg.name, rows, "this machine")))
    out.print(
        f"results in {out_dir}/ (rows.csv, table.md, gates.md, bench.json, gap_vs_time_*.png, mia_hist_*.png)"
    )


@app.command("bench-memory")
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
    from rfau.bench.memory import memory_rises, memory_table

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
    from rich.markdown import Markdown

    out.print(Markdown(memory_table(rows)))
    out.print(f"results in {out_dir}/memory.json, memory.md")
