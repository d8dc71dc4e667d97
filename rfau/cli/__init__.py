"""The `rfau` command line: thin drivers over the library (typer + rich).

One module per command group (request, batch, pipeline, audit, model), and modules of top-level
commands (experiment, bench, registry). COMMANDS below is the one table of them, the CLI's seam:
the root lists every command from it without importing any of those modules (`rfau --help`), and
imports only the module of the command it runs (`rfau request ...` never loads the batch's or the
bench's libraries). rfau.cli.common holds what they share, with the root group's one error handler:
an RfauError becomes a one-line message and the exit code of its type (rfau.errors.ExitCode:
2 usage, 3 runtime; 1 is a check that found problems).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from importlib import import_module
from importlib.metadata import version as package_version
from typing import Annotated, Any

import typer
from typer._click.core import Command, Context  # typer's own copy of click
from typer._click.shell_completion import CompletionItem
from typer.core import TyperCommand, TyperGroup
from typer.main import get_group

from rfau.cli.common import RfauTyper, RootGroup

# command -> (where it is, the first paragraph of its help: what `rfau --help` shows of it).
# "module:app" is a typer app that is the command (a group); "module:app:name" is that app's
# command NAME. The order is that of `rfau --help`; tests/unit/test_cli_lazy.py checks every entry
# against the command it loads.
COMMANDS: dict[str, tuple[str, str]] = {
    "split": (
        "rfau.cli.experiment:experiment_app:split",
        "Validate deletion requests and write the retain/forget/holdout/test manifests.",
    ),
    "train": (
        "rfau.cli.experiment:experiment_app:train",
        "Train a model: the original (bootstrap) or, with --split, a retrained reference.",
    ),
    "unlearn": (
        "rfau.cli.experiment:experiment_app:unlearn",
        "Remove the split's forget set from a model (RFAU by default).",
    ),
    "evaluate": (
        "rfau.cli.experiment:experiment_app:evaluate",
        "UA, RA, TA, per-class accuracy and MIA-efficacy of a model on a split.",
    ),
    "methods": (
        "rfau.cli.experiment:experiment_app:methods",
        "List the unlearning methods, or one method's settings (`rfau methods rfau`).",
    ),
    "run": (
        "rfau.cli.experiment:experiment_app:run",
        "The experiment: a deletion batch on a throwaway store and registry (bootstrap the original,\n"
        "unlearn with RFAU, evaluate, register behind the gates), then retrain, then a table.",
    ),
    "bench": (
        "rfau.cli.bench:bench_app:bench",
        "Benchmark every method against retrain and do-nothing; writes CSV, Markdown and plots.",
    ),
    "bench-memory": (
        "rfau.cli.bench:bench_app:bench-memory",
        "Memory each method's unlearn stage needs: a fresh process per method over a bench run's\n"
        "saved models (RSS rise above the loaded data; CUDA rise on a GPU); writes memory.json/.md.",
    ),
    "register": (
        "rfau.cli.registry:registry_app:register",
        "Register a model version; it becomes champion only when every gate passes.",
    ),
    "promote": (
        "rfau.cli.registry:registry_app:promote",
        "Make a version champion by hand; the old champion becomes 'previous'.",
    ),
    "rollback": (
        "rfau.cli.registry:registry_app:rollback",
        "Give the champion alias back to the 'previous' version.",
    ),
    "models": (
        "rfau.cli.registry:registry_app:models",
        "Registered versions with their aliases and gate verdicts.",
    ),
    "request": ("rfau.cli.request:request_app", "Deletion requests: add them, list them with their states."),
    "batch": (
        "rfau.cli.batch:batch_app",
        "One deletion batch: all pending requests -> one new model version.",
    ),
    "pipeline": (
        "rfau.cli.pipeline:pipeline_app",
        "The Kubeflow pipeline: compile, run locally, submit, schedule.",
    ),
    "audit": ("rfau.cli.audit:audit_app", "The deletion ledger: verify it, show the proof for a request."),
    "model": ("rfau.cli.model:model_app", "Bring your own pre-trained model: import it as an rfau model."),
}


class LazyCommands(MutableMapping[str, Command]):
    """The root's commands by name: an entry of ``table`` becomes its command (its module imported)
    the first time it is looked up; names alone (``keys()``, ``in``) import nothing."""

    def __init__(self, table: dict[str, tuple[str, str]]):
        self._entries: dict[str, str | Command] = {name: where for name, (where, _) in table.items()}
        self._apps: dict[str, TyperGroup] = {}  # "module:app" -> its group, built once

    def __getitem__(self, name: str) -> Command:
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = self._entries[name] = self._load(name, entry)
        return entry

    def _load(self, name: str, where: str) -> Command:
        module, app_name, command = (where.split(":") + [""])[:3]
        key = f"{module}:{app_name}"
        if key not in self._apps:
            self._apps[key] = get_group(getattr(import_module(module), app_name))
        group = self._apps[key]
        if command:
            return group.commands[command]
        group.name = name
        return group

    def __setitem__(self, name: str, command: Command) -> None:
        self._entries[name] = command

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class LazyRoot(RootGroup):
    """`rfau`: its commands come from COMMANDS, each module imported when its command runs. Its help
    and the shell's completion of a command name list them from the table alone."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        registered = self.commands  # on the app itself: none, every command is in COMMANDS
        self.commands = LazyCommands(COMMANDS)
        self.commands.update(registered)
        self._listing = False  # listing the commands (help, completion): their table entries do

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if self._listing and cmd_name in COMMANDS:
            return TyperCommand(cmd_name, help=COMMANDS[cmd_name][1])
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Context, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def shell_complete(self, ctx: Context, incomplete: str) -> list[CompletionItem]:
        self._listing = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rfau {package_version('rfau')}")
        raise typer.Exit()


EPILOG = "\n\n".join(
    [
        "[b]Exit codes[/b]: 0 success; 1 a check found problems (`audit verify`; a batch, `register` or "
        "`pipeline run --local` whose gates failed); 2 usage error (a bad option, argument "
        "or setting); 3 runtime failure (bad input data, a missing or corrupt file, an unreachable "
        "service, a failed stage, a held lock); 143 stopped by SIGTERM (its claimed requests released "
        "first). An error is one line on stderr, with --json too.",
        "[b]--json[/b] (every command that prints a result): one JSON document on stdout, nothing else. "
        "[b]-q/--quiet[/b] (before the command): nothing on stdout but that document, no progress; "
        "RFAU_QUIET=1 turns off progress only. [b]--out[/b] is also spelled --output.",
    ]
)

app = RfauTyper(
    cls=LazyRoot,
    help="rfau: audited, retraining-free data deletion for PyTorch models.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print `rfau <version>` and exit."
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Nothing on stdout but a --json result; no progress. Errors still go to stderr.",
        ),
    ] = False,
) -> None:
    """rfau: audited, retraining-free data deletion for PyTorch models."""


__all__ = ["COMMANDS", "app"]
