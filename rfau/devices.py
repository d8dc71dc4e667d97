"""Checks for settings every method config shares: the torch device, KFP cron schedules and the
component images' references."""

from __future__ import annotations

import re

from rfau.errors import RfauError, UsageError

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
_CRON_FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
_CRON_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def check_device(device: str) -> str:
    """Return ``device`` when torch can use it here; otherwise an RfauError naming the problem."""
    if not _DEVICE.match(device):
        raise UsageError(f"device {device!r} is not one of cpu, cuda, cuda:N, mps")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RfauError(f"device {device!r} asked for but CUDA is not available on this machine")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise RfauError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise RfauError("device 'mps' asked for but MPS is not available on this machine")
    return device


# what KFP's scheduler (robfig/cron) takes besides fields: descriptors, and names of months and weekdays
CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EVERY = re.compile(r"^@every ((\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$")
_CRON_NAMES = {
    "month": {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())},
    "day of week": {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())},
}


def kfp_cron(expr: str) -> str:
    """A schedule as KFP's recurring runs take it: a descriptor (``@daily``, ``@every 6h``...) as
    it is, standard 5-field cron with a seconds field put first, or KFP's own 6 fields; every
    field checked (numbers, ranges, steps, ``*``/``?``, month and weekday names like ``MON-FRI``)."""
    expr = " ".join(expr.split())
    if expr.startswith("@"):
        if expr.lower() in CRON_DESCRIPTORS or _EVERY.match(expr):
            return expr
        raise UsageError(
            f"cron {expr!r}: unknown descriptor; use one of {', '.join(CRON_DESCRIPTORS)} or "
            "'@every <duration>' (e.g. @every 6h), or cron fields"
        )
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise UsageError(
            f"cron {expr!r} has {len(fields)} fields: give 5 or 6 fields (standard cron, or KFP's with "
            "seconds first) or a descriptor such as @daily"
        )
    if len(fields) == 5:  # standard cron -> KFP's, with seconds first
        expr = "0 " + expr
    return check_cron(expr)


def check_cron(expr: str) -> str:
    """Validate a KFP recurring-run cron (6 fields: second minute hour day-of-month month day-of-week)."""
    fields = expr.split()
    if len(fields) != 6:
        raise UsageError(
            f"cron {expr!r} has {len(fields)} fields; KFP needs 6: second minute hour day month weekday"
        )
    for text, name, (lo, hi) in zip(fields, _CRON_FIELDS, _CRON_RANGES):
        for part in text.split(","):
            _check_cron_part(part, name, lo, hi, expr)
    return expr


def _check_cron_part(part: str, name: str, lo: int, hi: int, expr: str) -> None:
    base, _, step = part.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        raise UsageError(f"cron {expr!r}: step {step!r} in the {name} field is not a positive number")
    if base == "*" or (base == "?" and name.startswith("day")):
        return
    names = _CRON_NAMES.get(name, {})
    bounds = [str(names.get(b.upper(), b)) for b in base.split("-")]
    if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
        raise UsageError(
            f"cron {expr!r}: {part!r} in the {name} field is not a number, range or '*'"
            + (f" (names: {', '.join(names)})" if names else "")
        )
    for b in bounds:
        if not lo <= int(b) <= hi:
            raise UsageError(f"cron {expr!r}: {b} is outside {lo}-{hi} in the {name} field")


# an OCI image reference as registries and container runtimes parse it (the distribution
# reference grammar): [registry[:port]/]path[:tag][@algorithm:digest], path in lower case
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d+)?/)?"
)
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_TAG = r"(?::[\w][\w.-]{0,127})?"
_DIGEST = r"(?:@(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}))?"
_IMAGE = re.compile(f"^(?P<name>{_DOMAIN}{_PATH}){_TAG}{_DIGEST}$")


def check_image_ref(ref: str, setting: str = "RFAU_IMAGE") -> str:
    """``ref`` when it is an image reference a cluster can pull (e.g. ghcr.io/rfau/rfau:0.1.0, or
    with @sha256:<64 hex>); otherwise a UsageError naming ``setting`` and the expected form."""
    m = _IMAGE.match(ref)
    if not m or len(m["name"]) > 255:  # the grammar's limit on the name (registry and path)
        raise UsageError(
            f"{setting} {ref!r} is not an image reference: expected [registry[:port]/]name[:tag]"
            "[@sha256:<64 hex digits>] with a lower-case name, e.g. ghcr.io/rfau/rfau:0.1.0"
        )
    return ref
