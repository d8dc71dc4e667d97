"""The power of the deletion evidence: the smallest effect a test on n samples could detect.

A proof on 30 forget samples must not read like one on 3,000: with few samples an attacker's
advantage has to be large before any test sees it. For each evidence statistic we state its
*minimum detectable effect* (MDE): the smallest true value that a one-sided test at level
``ALPHA`` (0.05) detects with probability ``POWER`` (0.8), by the normal approximation
``null + (z_{1-alpha} + z_{power}) x (the statistic's standard error under the null)``:

- forget-vs-unseen AUC, n samples per side: the Mann-Whitney AUC's null standard error is
  ``sqrt((n1 + n2 + 1) / (12 n1 n2))`` (Hanley & McNeil 1982), so with n = n1 = n2 the MDE is
  ``0.5 + 2.486 x sqrt((2n + 1) / (12 n^2))``: 0.69 at n = 30, 0.57 at n = 200, 0.52 at 3,000.
  (Our AUC is a cross-validated logistic regression's; the rank statistic's spread is the
  textbook yardstick for it, and the gate's own bound adds the measured CV spread on top.)
- loss-threshold member rate at 10% FPR: the binomial standard error of data that looks unseen,
  ``100 x sqrt(0.1 x 0.9 x (1/n_forget + 1/n_reference))`` percent points
  (``rfau.metrics.evidence.member_rate_spread``), so the MDE is ``10 + 2.486 x`` that.

Where the gate's bound lies above the MDE, the gate is the weaker of the two: the proof states
both, so a reader sees what an attacker could still have had without the test noticing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol


class GateResult(Protocol):
    """What the wording reads of ``rfau.records.GateResult`` (not imported: the gates import this)."""

    name: str
    passed: bool
    value: float | None
    bound: float | None
    reason: str
    measurable: bool
    n: int | None
    detectable: float | None


ALPHA = 0.05
POWER = 0.8
Z_ALPHA = 1.6448536269514722  # one-sided 5%
Z_POWER = 0.8416212335729143  # 80% power
Z_SUM = Z_ALPHA + Z_POWER


def auc_null_se(n_positive: int, n_negative: int) -> float:
    """Standard error of the Mann-Whitney AUC when the two sides do not differ."""
    return math.sqrt((n_positive + n_negative + 1) / (12 * n_positive * n_negative))


def detectable_auc(n_per_side: int | None) -> float | None:
    """The smallest AUC a test with ``n_per_side`` samples on each side detects (alpha 0.05,
    power 0.8); None without samples; at most 1."""
    if not n_per_side or n_per_side < 1:
        return None
    return min(1.0, 0.5 + Z_SUM * auc_null_se(n_per_side, n_per_side))


def detectable_member_rate(spread: float | None, fpr_percent: float = 10.0) -> float | None:
    """The smallest member rate (percent) the loss-threshold test detects, given its binomial
    spread under the null (percent points); None without one; at most 100."""
    if spread is None:
        return None
    return min(100.0, fpr_percent + Z_SUM * spread)


def error_step(n: int) -> float:
    """The granularity (points) of an error rate on n samples: it can only move in steps of
    100/n (with 4 samples: 0, 25, 50, 75 or 100)."""
    return 100.0 / n if n > 0 else 100.0


def widened(bound: float, n: int | None) -> tuple[float, str]:
    """A gap bound on a share of n samples, widened to the share's step (100/n points) where it is
    finer: a bound the statistic cannot meet at this n tests nothing (with 4 samples UA can only
    be 0, 25, 50, 75 or 100, so |UA - 7.5| <= 5 can never pass). The note says so."""
    if not n:
        return bound, ""
    step = error_step(n)
    if step <= bound:
        return bound, ""
    return (
        step,
        f"; bound widened from {bound:g} to {step:.4g}: with {n} forget samples it moves in "
        f"steps of {step:.4g} points",
    )


# --- in words: gate reports and proofs -----------------------------------------------------


def verdict_cell(r: GateResult) -> str:
    return "not measurable" if not r.measurable else ("pass" if r.passed else "FAIL")


def one_line(r: GateResult) -> str:
    """A gate's verdict in one line, for terminals and proofs."""
    if not r.measurable:
        return f"{r.name}: NOT MEASURABLE{f' (n = {r.n})' if r.n is not None else ''}"
    op = "<=" if r.passed else ">"
    return f"{r.name}: {r.value:.4g} {op} {r.bound:.4g} {'ok' if r.passed else 'FAILED'}"


def power_lines(results: Sequence[GateResult]) -> list[str]:
    """What the evidence could have detected at this size: one line per evidence gate with a
    detectable value, and one per gate that could not be measured (rfau.power)."""
    lines = []
    for r in results:
        if not r.measurable:
            lines.append(f"{r.name}: not measurable here ({r.reason.split('(', 1)[-1].split(')')[0]})")
        elif r.detectable is not None:
            side = " per side" if "auc" in r.name else " unseen reference samples"
            size = f"n = {r.n}{side}" if r.n is not None else "this n"
            lines.append(
                f"{r.name}: at {size} the smallest value detectable (alpha 0.05, power 0.8) is "
                f"{r.detectable:.3g}; the gate's bound was {r.bound:.3g}, measured {r.value:.3g}"
            )
    return lines


__all__ = [
    "ALPHA",
    "POWER",
    "auc_null_se",
    "detectable_auc",
    "detectable_member_rate",
    "error_step",
    "one_line",
    "power_lines",
    "verdict_cell",
    "widened",
]
