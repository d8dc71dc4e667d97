"""`rfau model`: bring a model of your own in (Hugging Face transformers, torchvision, timm)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from rfau.batch import bootstrap
from rfau.cli.common import DatasetOpt, JsonOpt, ModelNameOpt, TrackingOpt, emit, out, tracking_settings
from rfau.data.datasets import load_dataset
from rfau.data.split import HOLDOUT_FRACTION
from rfau.errors import UsageError
from rfau.io import claim_output
from rfau.models.importer import import_model

model_app = typer.Typer(
    help="Bring your own pre-trained model: import it as an rfau model.", no_args_is_help=True
)


def _labels(value: str | None) -> list[str] | None:
    """--labels: a JSON list, a file of one name per line (or a JSON list), or comma-separated."""
    if not value:
        return None
    path = Path(value)
    text = path.read_text() if path.is_file() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        sep = "\n" if path.is_file() else ","
        return [s.strip() for s in text.split(sep) if s.strip()]
    if not isinstance(parsed, list):
        raise UsageError(f"--labels: expected a list of class names, got {type(parsed).__name__}")
    return [str(c) for c in parsed]


@model_app.command("import")
def import_cmd(
    source: Annotated[
        Path,
        typer.Argument(
            help="A save_pretrained folder (hf-image, hf-text) or a .safetensors file (torchvision, timm)."
        ),
    ],
    family: Annotated[str, typer.Option(help="hf-image, hf-text, torchvision or timm.")],
    dataset: DatasetOpt,
    out_dir: Annotated[Path, typer.Option("--out", "--output", "-o", help="The rfau model folder to write.")],
    arch: Annotated[
        str | None, typer.Option(help="torchvision/timm: the model's name, e.g. resnet50.")
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="torchvision/timm: class names of the outputs (JSON list, file, or a,b,c)."),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="hf-text: tokens per text (default: the longest text, at most 512).")
    ] = None,
    holdout_fraction: Annotated[
        float,
        typer.Option(
            help="Share of the training split held out as unseen data; the model must not have seen it."
        ),
    ] = HOLDOUT_FRACTION,
    register: Annotated[
        bool,
        typer.Option(help="Also register it as the bootstrap champion (the first batch starts from it)."),
    ] = False,
    name: ModelNameOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the model's labels against the dataset's classes and write its model card (family,
    source, sha256 of the weights, classes, preprocessing) beside safetensors weights."""
    claim_output(out_dir, "model import")  # before the model is loaded
    settings = tracking_settings(name, tracking_uri) if register else None
    ds = load_dataset(dataset)
    options = {"arch": arch, "labels": _labels(labels), "max_length": max_length}
    card = import_model(source, family, ds, out_dir, holdout_fraction, options)
    result: dict[str, object] = {
        "model": str(out_dir),
        "family": card.family,
        "weights_sha256": card.weights_sha256,
    }
    if settings is not None:
        result["registered"] = register_bootstrap(out_dir, ds, settings, holdout_fraction)
    emit(as_json, result, lambda: out.print(_summary(result)))


def _summary(result: dict) -> str:
    sha = result["weights_sha256"][:12]
    line = f"imported a {result['family']} model into {result['model']} (weights {sha})"
    if "registered" in result:
        line += f"; registered as version {result['registered'].get('version')} (bootstrap champion)"
    return line


def register_bootstrap(model_dir: Path, ds, settings, holdout_fraction: float) -> dict:
    """Register the imported model as the bootstrap champion, as ``rfau.batch.ensure_base`` does
    with a model it trained (its metrics on the empty-forget split are its baseline)."""
    with tempfile.TemporaryDirectory(prefix="rfau-import-") as tmp:
        res = bootstrap(
            ds, Path(tmp) / "work", settings, holdout_fraction=holdout_fraction, original=model_dir
        )
    return json.loads(res.model_dump_json())
