"""The command line: thin drivers over rfau.stages and rfau.job (typer + rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rfau.config import TrainConfig
from rfau.errors import RfauError

app = typer.Typer(
    help="rfau: audited, retraining-free data deletion for PyTorch models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 130)  # wide tables in logs too
err = Console(stderr=True)

DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset", "-d", help="'digits' (embedded) or an ImageFolder directory / .tar.gz archive."
    ),
]
SplitOpt = Annotated[Path, typer.Option("--split", help="Split folder written by `rfau split`.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed (data order, init, sampling).")]
DeviceOpt = Annotated[str, typer.Option(help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")]


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(code=2)


def _parse_config(config: Path | None, sets: list[str] | None) -> dict:
    """A JSON config file plus KEY=VALUE overrides (values parsed as JSON when they parse)."""
    cfg: dict = {}
    if config:
        try:
            cfg = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RfauError(f"cannot read config {config}: {e}") from None
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RfauError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            cfg[key] = json.loads(value)
        except json.JSONDecodeError:
            cfg[key] = value
    return cfg


@app.command()
def split(
    requests: Annotated[list[Path], typer.Argument(help="Deletion request JSON files or folders of them.")],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for retain/forget/holdout/test manifests.")
    ],
    dataset: DatasetOpt = "digits",
    holdout_fraction: Annotated[
        float,
        typer.Option(help="Share of the training split held out for calibration; must match the model's."),
    ] = 0.1,
) -> None:
    """Validate deletion requests and write the retain/forget/holdout/test manifests."""
    from rfau.stages import split_stage

    try:
        s = split_stage(dataset, list(requests), out_dir, holdout_fraction)
    except RfauError as e:
        _fail(e)
    out.print_json(data=s.summary())


@app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for model.safetensors + model.json.")],
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
) -> None:
    """Train a model: the original (bootstrap) or, with --split, a retrained reference."""
    from rfau.data import load_dataset
    from rfau.stages import train_stage

    try:
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
    except RfauError as e:
        _fail(e)
    out.print(
        f"trained {card.architecture} on {card.train_samples} samples: "
        f"RA {card.metrics['ra']:.2f}%  TA {card.metrics['ta']:.2f}%  -> {out_dir}"
    )


@app.command()
def unlearn(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Folder of the model to unlearn from.")],
    split_dir: SplitOpt,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for the merged weights, model card, adapter/ and unlearn.json."
        ),
    ],
    dataset: DatasetOpt = "digits",
    method: Annotated[str, typer.Option(help="Unlearning method (see `rfau methods`).")] = "rfau",
    config: Annotated[Path | None, typer.Option(help="JSON file with method settings.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Method setting KEY=VALUE, e.g. --set rank=8 --set regime=sample."),
    ] = None,
) -> None:
    """Remove the split's forget set from a model (RFAU by default)."""
    from rfau.stages import unlearn_stage

    try:
        info = unlearn_stage(model_dir, dataset, split_dir, out_dir, method, _parse_config(config, set_))
    except RfauError as e:
        _fail(e)
    out.print(
        f"{method}: {info['seconds']:.1f} s, trainable parameters {info['trainable_params']:,} of "
        f"{info['total_params']:,} ({100 * info['trainable_share']:.2f}%) -> {out_dir}"
    )


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder to evaluate.")],
    split_dir: SplitOpt,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Metrics JSON file to write.")],
    dataset: DatasetOpt = "digits",
    seed: SeedOpt = 0,
) -> None:
    """UA, RA, TA, per-class accuracy and MIA-efficacy of a model on a split."""
    from rfau.stages import evaluate_stage

    try:
        m = evaluate_stage(model_dir, dataset, split_dir, out_path, seed)
    except RfauError as e:
        _fail(e)
    out.print({k: round(m[k], 2) for k in ("ua", "ra", "ta", "mia_confidence", "mia_entropy")})


@app.command()
def methods() -> None:
    """List the unlearning methods."""
    from rfau.methods import METHODS

    t = Table("method", "what it does")
    for name, m in METHODS.items():
        t.add_row(name, m.summary)
    out.print(t)


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
        bool, typer.Option(help="Log to MLflow and register the result (gated promotion).")
    ] = True,
    seed: SeedOpt = 0,
) -> None:
    """The experiment: split -> (train) -> unlearn with RFAU -> retrain -> evaluate, then a table."""
    from rfau.job import run_job

    if scenario not in ("random", "class"):
        _fail(RfauError(f"--scenario must be 'random' or 'class', got {scenario!r}"))
    try:
        summary = run_job(
            dataset,
            workdir,
            requests,
            scenario,
            model_dir,
            _parse_config(None, set_),
            retrain=retrain,
            seed=seed,
            track=track,
        )
    except RfauError as e:
        _fail(e)
    print_summary(summary)
    out.print(f"outputs in {workdir}/ (summary.json, split/, original/, rfau/adapter, metrics/)")


@app.command()
def bench(
    config: Annotated[
        str, typer.Argument(help="digits (CPU, seconds), cifar10-small (CPU, ~15 min) or cifar10 (GPU).")
    ],
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Results folder (default: results/<config>).")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="CIFAR-10 ImageFolder dir or archive (else RFAU_CIFAR10 or ../shared).")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated subset of methods (retrain is always run).")
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Number of seeds (default by config).")] = None,
    scenarios: Annotated[str | None, typer.Option(help="Comma-separated: class,random.")] = None,
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
) -> None:
    """Benchmark every method against retrain and do-nothing; writes CSV, Markdown and plots."""
    from rfau.bench import CONFIGS, aggregate, markdown_table, run_bench

    if config not in CONFIGS:
        _fail(RfauError(f"unknown bench config {config!r}; known: {', '.join(CONFIGS)}"))
    cfg = CONFIGS[config]
    upd: dict = {}
    if seeds:
        upd["seeds"] = tuple(range(seeds))
    if scenarios:
        upd["scenarios"] = tuple(s.strip() for s in scenarios.split(","))
        if not set(upd["scenarios"]) <= {"class", "random"}:
            _fail(RfauError(f"--scenarios must name class and/or random, got {scenarios!r}"))
    if max_train_per_class:
        upd["train_per_class"] = max_train_per_class
    if max_test_per_class:
        upd["test_per_class"] = max_test_per_class
    if epochs:
        upd["train"] = cfg.train.model_copy(update={"epochs": epochs})
    cfg = cfg.model_copy(update=upd)
    out_dir = out_dir or Path("results") / config
    try:
        rows = run_bench(cfg, out_dir, data, methods.split(",") if methods else None, device, reuse)
    except RfauError as e:
        _fail(e)
    from rich.markdown import Markdown

    out.print(Markdown(markdown_table(cfg, aggregate(rows), rows[0]["config"])))
    out.print(f"results in {out_dir}/ (rows.csv, table.md, bench.json, gap_vs_time_*.png, mia_hist_*.png)")


ModelNameOpt = Annotated[
    str | None,
    typer.Option("--name", help="Registered model name (default: $RFAU_MODEL_NAME or rfau-model)."),
]
TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (default: $RFAU_TRACKING_URI, else a local store in .rfau/).",
    ),
]


def _settings(name: str | None, tracking_uri: str | None):
    from rfau.tracking.settings import TrackingSettings

    return TrackingSettings.from_env(model_name=name, tracking_uri=tracking_uri)


@app.command()
def register(
    model_dir: Annotated[
        Path, typer.Option("--model", "-m", help="Unlearned model folder (from `rfau unlearn`).")
    ],
    metrics: Annotated[Path, typer.Option(help="Its evaluation JSON (from `rfau evaluate`).")],
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="Evaluation JSON of the model it was unlearned from, on the same split (for the drop gates)."
        ),
    ] = None,
    gates: Annotated[
        Path | None, typer.Option(help="JSON file with gate bounds (see rfau/tracking/gates.py).")
    ] = None,
    bootstrap: Annotated[
        bool, typer.Option(help="Register an original model: no gates; champion only if there is none.")
    ] = False,
    name: ModelNameOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Register a model version; it becomes champion only when every gate passes."""
    from rfau.tracking.gates import Gates
    from rfau.tracking.registry import register as do_register

    try:
        g = Gates(**_parse_config(gates, None)) if gates else Gates()
        res = do_register(model_dir, metrics, _settings(name, tracking_uri), g, baseline, bootstrap)
    except RfauError as e:
        _fail(e)
    except ValueError as e:  # pydantic: bad gate settings
        _fail(RfauError(f"invalid gates in {gates}: {e}"))
    out.print_json(data=res)
    if not bootstrap and not res["gates_passed"]:
        err.print("[yellow]a gate failed: the champion is unchanged (see gate_failures on the version)[/]")


@app.command()
def promote(
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
    name: ModelNameOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Make a version champion by hand; the old champion becomes 'previous'."""
    from rfau.tracking.registry import promote as do_promote

    try:
        out.print_json(data=do_promote(_settings(name, tracking_uri), version))
    except RfauError as e:
        _fail(e)


@app.command()
def rollback(name: ModelNameOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Give the champion alias back to the 'previous' version."""
    from rfau.tracking.registry import rollback as do_rollback

    try:
        out.print_json(data=do_rollback(_settings(name, tracking_uri)))
    except RfauError as e:
        _fail(e)


@app.command()
def models(name: ModelNameOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Registered versions with their aliases and gate verdicts."""
    from rfau.tracking.registry import list_versions

    try:
        rows = list_versions(_settings(name, tracking_uri))
    except RfauError as e:
        _fail(e)
    t = Table("version", "aliases", "gates", "method", "requests", "gate failures")
    for r in rows:
        t.add_row(
            str(r["version"]),
            ", ".join(r["aliases"]),
            str(r["gates_passed"]),
            str(r["method"]),
            str(r["requests"]),
            str(r["gate_failures"]),
        )
    out.print(t)


def print_summary(summary: dict) -> None:
    rows = summary["methods"]
    kind = f"classes {summary['forget_classes']}" if summary["forget_classes"] else "samples"
    t = Table(title=f"{summary['dataset']}: forgetting {summary['forget']} {kind} (percent)")
    cols = ["UA", "RA", "TA", "TA kept cl.", "MIA conf.", "MIA entr.", "avg gap", "seconds", "trainable"]
    t.add_column("method")
    for c in cols:
        t.add_column(c, justify="right")
    for name, r in rows.items():
        t.add_row(
            name,
            *(f"{r[k]:.2f}" for k in ("ua", "ra", "ta", "ta_kept_classes", "mia_confidence", "mia_entropy")),
            f"{r['avg_gap']:.2f}" if "avg_gap" in r else "-",
            f"{r.get('seconds', 0):.1f}",
            f"{r.get('trainable_params', 0):,}",
        )
    out.print(t)
    out.print(
        f"RFAU trains {summary['rfau_trainable_params']:,} of {summary['total_params']:,} parameters "
        f"({100 * summary['rfau_trainable_share']:.2f}%)"
    )
    reg = summary.get("registry")
    if reg:
        verdict = (
            "gates passed: promoted to champion"
            if reg["gates_passed"]
            else "a gate failed: champion unchanged"
        )
        out.print(
            f"registry: {reg['model']} version {reg['version']} "
            f"({'new' if reg['new'] else 'already registered'}; "
            f"{verdict}); champion is version {reg['champion']}"
        )
        for g in reg.get("gates", []):
            out.print(
                f"  gate {g['name']}: {g['value']:.2f} <= {g['bound']} {'ok' if g['passed'] else 'FAILED'}"
            )


# operations: requests, batches, the KFP pipeline, the audit ledger
from rfau.cli_ops import audit_app, batch_app, pipeline_app, request_app  # noqa: E402

app.add_typer(request_app, name="request")
app.add_typer(batch_app, name="batch")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(audit_app, name="audit")

if __name__ == "__main__":
    app()
