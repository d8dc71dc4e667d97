"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""


def validation_problems(e, empty: str = "value") -> str:
    """A pydantic ValidationError as one line: ``field: message; field: message``."""
    return "; ".join(f"{'.'.join(map(str, x['loc'])) or empty}: {x['msg']}" for x in e.errors())


class RfauError(Exception):
    """Base class for errors caused by bad input or settings, not by a bug."""


class RequestError(RfauError):
    """A deletion request is malformed or cannot be honoured."""


class DatasetError(RfauError):
    """A dataset cannot be found or read."""


class ModelError(RfauError):
    """A model checkpoint or its configuration is invalid."""
