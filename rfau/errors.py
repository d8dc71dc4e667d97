"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback.

The exit code comes from the error's type (``exit_code_of``), never from its message:

- ``UsageError``: what the user typed is wrong (an option, argument, setting, params.yaml value,
  environment variable naming rfau's settings). Fix the command; running it again as is fails again.
- any other ``RfauError``: the world failed (a dataset or model file missing or corrupt, bad data in a
  request file, an unreachable MLflow/S3/KFP, a stage that failed, a lock held). Plain ``RfauError``
  means this on purpose: most of rfau's checks read data, files and services, while the checks of what
  the user typed are few and named (they raise ``UsageError``), so an error nobody classified is
  reported as the world's failure rather than blamed on a command that may be right.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """The `rfau` exit codes (documented in `rfau --help` and the README)."""

    OK = 0
    CHECK_FAILED = 1  # the command ran, and a check found problems (audit verify, a gate failed)
    USAGE = 2  # bad options, arguments or settings (click's own usage errors exit 2 too)
    RUNTIME = 3  # bad input data, a missing or corrupt file, an unreachable service, a failed stage
    TERMINATED = 143  # stopped by SIGTERM (128 + 15, as a shell reports it), after releasing its claims


def validation_problems(e, empty: str = "value") -> str:
    """A pydantic ValidationError as one line: ``field: message; field: message``."""
    return "; ".join(f"{'.'.join(map(str, x['loc'])) or empty}: {x['msg']}" for x in e.errors())


class RfauError(Exception):
    """Base class for errors caused by bad input, settings or services, not by a bug (exit 3 unless
    a subclass says otherwise: see the module's docstring)."""


class UsageError(RfauError):
    """An option, argument or setting the user gave is invalid (exit 2)."""


class RequestError(RfauError):
    """A deletion request is malformed or cannot be honoured."""


class UnknownRequestError(RequestError, UsageError):
    """A request id the user named is not in the store (or in no ledger record)."""


class DatasetError(RfauError):
    """A dataset cannot be found or read."""


class ModelError(RfauError):
    """A model checkpoint or its configuration is invalid."""


class ModelSettingsError(ModelError, UsageError):
    """A method setting the user gave does not fit the model or this machine's device names
    (an unknown LoRA target module or tapped layer, an unknown device)."""


class Terminated(BaseException):
    """The process was told to stop (SIGTERM) and stopped cleanly (exit 143).

    Not an Exception (like KeyboardInterrupt): a library's ``except Exception`` must not swallow a
    stop. scikit-learn's cross-validation did (a failed fit or score is its NaN), and the batch then
    ran on past the signal to the end of its grace period."""


def exit_code_of(error: RfauError | Terminated) -> ExitCode:
    """The exit code for ``error``, by its type."""
    if isinstance(error, Terminated):
        return ExitCode.TERMINATED
    return ExitCode.USAGE if isinstance(error, UsageError) else ExitCode.RUNTIME
