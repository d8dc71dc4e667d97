"""What every command shares: the typer app, its one error handler, consoles and common options."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from rfau.errors import RfauError
from rfau.params import parse_overrides

# Exit codes, in one place: 2 for any RfauError (bad input, a failed stage, an unreachable service).
EXIT_ERROR = 2
EXIT_AUDIT_PROBLEMS = 1  # `rfau audit verify` found problems (listed on stdout)

out = Console(width=None if sys.stdout.isatty() else 130)  # wide tables in logs too
err = Console(stderr=True)


class _Commands(TyperGroup):
    """The root command group: every command's RfauError ends here, printed as one line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RfauError as e:
            fail(str(e))


def fail(message: str) -> NoReturn:
    """Print ``message`` as one line on stderr (never wrapped: logs and pods read it whole; never
    read as rich markup: it may hold brackets) and exit with EXIT_ERROR."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code=EXIT_ERROR) from None


app = typer.Typer(
    cls=_Commands,
    help="rfau: audited, retraining-free data deletion for PyTorch models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset", "-d", help="'digits' (embedded) or an ImageFolder directory / .tar.gz archive."
    ),
]
SplitOpt = Annotated[Path, typer.Option("--split", help="Split folder written by `rfau split`.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed (data order, init, sampling).")]
DeviceOpt = Annotated[str, typer.Option(help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")]


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


ParamsOpt = Annotated[
    Path | None, typer.Option("--params", "-p", help="YAML file of batch parameters (see params.yaml).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Parameter KEY=VALUE (JSON values), e.g. --set method_config='{\"rank\": 8}'."
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Request store: a folder or s3://bucket/prefix "
        "(default: $RFAU_REQUEST_STORE, else .rfau/store).",
    ),
]


def tracking_settings(name: str | None = None, tracking_uri: str | None = None):
    """MLflow settings from the environment, with the command's --name / --tracking-uri on top."""
    from rfau.tracking.settings import TrackingSettings

    settings = TrackingSettings.from_env(model_name=name, tracking_uri=tracking_uri)
    settings.check()  # a bad URI or state folder fails here, before a command changes anything
    return settings


def check_method_settings(method: str, config: dict | None, device_here: bool = True):
    """A method's settings -> its config, checked before a command reads a model or claims a
    request; the device must exist here when ``device_here`` (else only its name is checked:
    a pipeline's unlearn task may run on another machine)."""
    import torch

    from rfau.config import resolve_device
    from rfau.stages import method_config

    cfg = method_config(method, config)
    device = getattr(cfg, "device", "auto")
    if device_here:
        resolve_device(device)
    elif device != "auto":
        try:
            torch.device(device)
        except RuntimeError:
            raise RfauError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    return cfg


def store_uri(store: str | None) -> str:
    """The request store: --store, else $RFAU_REQUEST_STORE, else .rfau/store."""
    from rfau.data.request_store import default_store

    return store or default_store()


__all__ = ["parse_overrides"]
