"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""


class RfauError(Exception):
    """Base class for errors caused by bad input or settings, not by a bug."""


class RequestError(RfauError):
    """A deletion request is malformed or cannot be honoured."""


class DatasetError(RfauError):
    """A dataset cannot be found or read."""


class ModelError(RfauError):
    """A model checkpoint or its configuration is invalid."""
