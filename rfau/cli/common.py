"""What every command shares: the root group's one error handler, exit codes, consoles, the result
printing (--json, --quiet) and common options. The root itself (the table of commands it loads
lazily, its own options) is rfau.cli."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markup import escape as escape_markup
from typer._click.core import Context  # typer's own copy of click
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperCommand, TyperGroup

from rfau.data.request_store import default_store
from rfau.errors import ExitCode, RfauError, Terminated, exit_code_of
from rfau.params import parse_overrides
from rfau.tracking.settings import TrackingSettings, redact

out = Console(width=None if sys.stdout.isatty() else 130)  # wide tables in logs too
# MLflow logs every database error with its whole traceback (a full disk: ~230 lines) before it
# raises it; the command reports the error itself, as one line
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
err = Console(stderr=True, soft_wrap=True)  # one problem, one line: never wrapped at 80 columns


class RootGroup(TyperGroup):
    """The root command group: every command's RfauError ends here, printed as one line."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """click's usage errors (a bad or missing option, a bad value) as one line with exit code 2,
        not typer's boxed usage block: logs and scripts read one line per problem."""
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        except NoArgsIsHelpError as e:  # a group named without a command: its help
            if not standalone_mode:
                raise
            e.show()
            sys.exit(ExitCode.USAGE)
        except ClickException as e:
            if not standalone_mode:
                raise
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx is not None else (kwargs.get("prog_name") or "rfau")
            message = " ".join(e.format_message().split())
            line = f"{where}: {message} (see '{where} --help')"
            err.print(f"[bold red]error:[/] {escape_markup(line)}", soft_wrap=True)
            sys.exit(ExitCode.USAGE)
        except typer.Abort:
            if not standalone_mode:
                raise
            err.print("[bold red]error:[/] aborted", soft_wrap=True)
            sys.exit(ExitCode.RUNTIME)
        if not standalone_mode:
            return rv
        # standalone_mode=False hands back a typer.Exit's code (or a command's return value)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: Context):
        try:
            return super().invoke(ctx)
        except (RfauError, Terminated) as e:
            fail(str(e), exit_code_of(e))
        except OSError as e:  # a full disk, a name too long: the world (or a path typed) failed
            fail(os_error_line(e), ExitCode.USAGE if e.errno == errno.ENAMETOOLONG else ExitCode.RUNTIME)
        except Exception as e:
            if not type(e).__module__.startswith(SERVICE_MODULES):
                raise  # a bug: its traceback is what a bug report needs
            fail(f"{type(e).__name__}: {_first_line(e)}", ExitCode.RUNTIME)


# libraries whose errors are a service's or a store's failure, never rfau's bug (exit 3)
SERVICE_MODULES = ("mlflow", "botocore", "boto3", "requests", "urllib3", "sqlalchemy", "sqlite3", "kfp")


# SQLAlchemy's framing of a database error, around the line that says what failed
_FRAMING = ("(raised as a result of", "[SQL:", "[parameters:", "(Background on this error")


def _first_line(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip() and not x.startswith(_FRAMING)]
    return lines[0][:300] if lines else type(e).__name__


def os_error_line(e: OSError) -> str:
    """An OSError as one line: what failed, on which path (a long one shortened)."""
    name = str(e.filename or "")
    name = name if len(name) <= 120 else name[:100] + "..."
    return f"{e.strerror or _first_line(e)}" + (f": {name!r}" if name else "")


class _Command(TyperCommand):
    """Every rfau command: while it works, stdout carries only its result (see results_only)."""

    def invoke(self, ctx: Context):
        quiet = bool(ctx.find_root().params.get("quiet"))
        with results_only(quiet=quiet, as_json=bool(ctx.params.get("as_json"))):
            return super().invoke(ctx)


class RfauTyper(typer.Typer):
    """A typer app whose commands are rfau commands (_Command) unless told otherwise."""

    def command(self, *args, cls: type[TyperCommand] | None = None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


def fail(message: str, code: ExitCode) -> NoReturn:
    """Print ``message`` as one line on stderr (never wrapped: logs and pods read it whole; never
    read as rich markup: it may hold brackets) and exit with ``code``."""
    # a service's own message may quote a URI with its credentials: they never reach a log
    err.print(f"[bold red]error:[/] {escape_markup(redact(message))}", soft_wrap=True)
    raise typer.Exit(code=code) from None


@contextmanager
def results_only(quiet: bool, as_json: bool) -> Iterator[None]:
    """Run a command with stdout reserved for its result: what else would reach stdout (print()
    calls, library logs, a subprocess such as a kfp.local task) goes to stderr; ``out`` and
    ``emit`` write the result. With ``as_json`` or ``quiet`` the people's output (``out``) is
    muted; ``quiet`` also turns progress off (RFAU_QUIET, which child processes inherit)."""
    results = sys.stdout
    saved_fd = _stdout_fd_to_stderr()
    if saved_fd is not None:  # fd 1 now writes to stderr: the result goes through a copy of it
        results = os.fdopen(saved_fd, "w", encoding="utf-8", closefd=True)
    quiet_env = os.environ.get("RFAU_QUIET")
    if quiet:
        os.environ["RFAU_QUIET"] = "1"
    out.file, out.quiet = results, quiet or as_json
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        results.flush()
        out.file, out.quiet = None, False  # type: ignore[assignment]  # None: rich follows sys.stdout again
        if quiet:
            _restore_env("RFAU_QUIET", quiet_env)
        if saved_fd is not None:
            os.dup2(results.fileno(), 1)
            results.close()


def _stdout_fd_to_stderr() -> int | None:
    """Point file descriptor 1 at stderr and return a copy of the old one; None where
    sys.stdout is no file descriptor 1 (typer's CliRunner: nothing but Python writes to it)."""
    try:
        if sys.stdout.fileno() != 1:
            return None
    except (AttributeError, io.UnsupportedOperation, ValueError):
        return None
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    return saved


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def jsonable(data: Any) -> Any:
    """A result as JSON data: records through their own ``model_dump(mode="json")`` (it may omit
    unset fields), anything else (paths, dataclasses, enums) through pydantic's encoder."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, dict):
        return {str(k): jsonable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [jsonable(v) for v in data]
    return to_jsonable_python(data)


def emit(as_json: bool, data: Any, show: Callable[[], object] | None = None) -> None:
    """A command's result: with --json one JSON document of ``data`` on stdout; else ``show()``
    prints it for people (muted by --quiet)."""
    if as_json:
        out.file.write(json.dumps(jsonable(data), indent=2) + "\n")
    elif show is not None:
        show()


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the result as one JSON document on stdout (errors: still one line on stderr "
        "and the exit code).",
    ),
]
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
    settings = TrackingSettings.from_env(model_name=name, tracking_uri=tracking_uri)
    settings.check()  # a bad URI or state folder fails here, before a command changes anything
    return settings


def store_uri(store: str | None) -> str:
    """The request store: --store, else $RFAU_REQUEST_STORE, else .rfau/store."""
    return store or default_store()


__all__ = ["ExitCode", "parse_overrides"]
