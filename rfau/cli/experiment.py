"""Experiment commands (top-level): split, train, unlearn, evaluate, methods, run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rfau.batch.preflight import check_method_settings
from rfau.cli.common import (
    DatasetOpt,
    DeviceOpt,
    JsonOpt,
    RfauTyper,
    SeedOpt,
    SplitOpt,
    emit,
    out,
    parse_overrides,
)
from rfau.cli.render import print_summary
from rfau.config import TrainConfig
from rfau.data import load_dataset
from rfau.errors import UsageError
from rfau.io import claim_output, claim_output_file
from rfau.job import RUN, is_run_folder, run_job
from rfau.methods import METHODS, get_method, settings_help
from rfau.stages import evaluate_stage, is_evaluation, split_stage, train_stage, unlearn_stage

# each command is a top-level `rfau NAME` (rfau.cli.COMMANDS)
experiment_app = RfauTyper()


@experiment_app.command()
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
    claim_output(out_dir, "split")

    summary = split_stage(dataset, list(requests), out_dir, holdout_fraction).summary()
    emit(as_json, summary, lambda: out.print_json(data=summary))


@experiment_app.command()
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


@experiment_app.command()
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


@experiment_app.command()
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
    claim_output_file(out_path, "evaluate", is_evaluation)
    m = evaluate_stage(model_dir, dataset, split_dir, out_path, seed)
    emit(as_json, m, lambda: out.print(_metrics_table(m, model_dir)))


def _metrics_table(m, model_dir: Path) -> Table:
    t = Table(title=f"{model_dir} ({m.regime} forgetting; percent)")
    for col in ("UA", "RA", "TA", "TA kept cl.", "MIA conf.", "MIA entr."):
        t.add_column(col, justify="right")
    t.add_row(*(f"{v:.2f}" for v in (m.ua, m.ra, m.ta, m.ta_kept_classes, m.mia_confidence, m.mia_entropy)))
    return t


@experiment_app.command()
def methods(
    name: Annotated[str | None, typer.Argument(help="A method: print its settings with their help.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the unlearning methods, or one method's settings (`rfau methods rfau`)."""
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


@experiment_app.command()
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
