"""The escalation ladder: a batch tries each rung (a method and its settings) in order, from the
same base and split, until one passes the same gates; the last rung is ``retrain``, exact by
construction. Which rungs a batch climbs is decided at data-split (``plan``): all of them; only
the exact one when a request is due within ``retrain_lead_days`` or has failed ``max_attempts``
batches; none of ``retrain`` where the base model has no recipe to retrain from.

Each rung's model folder carries ``ladder.json`` ({"rung", "prior": the attempts before it,
"remaining": the rungs after it}), so that the evaluate stage says whether to escalate and the
register stage records every attempt, whether the rungs ran in one process (``climb``) or as
separate KFP tasks.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rfau.batch.common import read_batch
from rfau.batch.evaluation import evaluate
from rfau.batch.unlearning import unlearn
from rfau.data.deadlines import due_at
from rfau.gates import Gates
from rfau.io import read_json, write_json
from rfau.models.families import get_family
from rfau.models.families.backbone import NO_BACKBONE
from rfau.params import EXACT, BatchParams
from rfau.records import BatchMeta, GateReport, UnlearnInfo

LADDER = "ladder.json"


class Attempt(BaseModel):
    """One rung tried: what ran, for how long, and the gates' verdict (the ledger's keys)."""

    rung: int  # position on the escalation ladder, 1-based
    method: str
    config: dict[str, Any]
    seconds: float
    gates_passed: bool
    failed_gates: list[str]
    why: str  # "" when it passed


def plan(p: BatchParams, exact_only: str | None, refused: str | None) -> list[dict[str, Any]]:
    """The rungs a batch climbs, each {"rung", "method", "config"}."""
    rungs = [{"rung": i, "method": r.method, "config": r.config} for i, r in enumerate(p.ladder(), 1)]
    if exact_only:  # the ladder's own exact rung (its settings), else retrain from the recipe
        exact = [r for r in rungs if r["method"] == EXACT]
        return exact or [{"rung": len(rungs) + 1, "method": EXACT, "config": {}}]
    return [r for r in rungs if r["method"] != EXACT] if refused else rungs


def split_plan(rungs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the approximate rungs, the trailing exact rung or nothing): on Kubeflow the first run in
    the unlearn task, the exact one in the retrain task (its own GPU node and deadline)."""
    if rungs and rungs[-1]["method"] == EXACT and len(rungs) > 1:
        return rungs[:-1], rungs[-1:]
    return rungs, []


def retrain_refusal(card) -> str | None:
    """Why the base model cannot be retrained without the data (no recipe rfau can rerun)."""

    why = get_family(card.family).unsupported.get(EXACT)
    if why:
        return f"the base model ({card.family}) cannot be retrained: {why}"
    if card.family == "hf-text" and not getattr(card, "backbone", None):
        return f"the base model (hf-text) cannot be retrained: {NO_BACKBONE}"
    return None


def unlearn_rung(
    batch_dir: Path, out_dir: Path, rung: dict[str, Any], prior: list[Attempt], remaining: list[dict]
) -> None:
    """One rung's model: the unlearn stage with the rung's method, and its ladder.json."""
    unlearn(batch_dir, out_dir, rung["method"], rung["config"] or None)
    write_json(
        out_dir / LADDER,
        {"rung": rung["rung"], "prior": [a.model_dump() for a in prior], "remaining": remaining},
    )


def ladder_of(model_dir: Path) -> dict[str, Any]:
    """A model's ladder.json; a model unlearned outside the ladder (`rfau batch unlearn`) is rung 1."""
    path = Path(model_dir) / LADDER
    return read_json(path) if path.is_file() else {"rung": 1, "prior": [], "remaining": []}


def attempt_of(model_dir: Path, eval_dir: Path) -> Attempt:
    unl = UnlearnInfo.read(Path(model_dir) / "unlearn.json")
    report = GateReport.read(Path(eval_dir) / "gates.json")
    failed = [g for g in report.gates if not g.passed]
    return Attempt(
        rung=ladder_of(model_dir)["rung"],
        method=unl.method,
        config=unl.config,
        seconds=round(unl.seconds, 3),
        gates_passed=report.passed,
        failed_gates=[g.name for g in failed],
        why="; ".join(g.reason or f"{g.name} {g.detail}" for g in failed)[:500],
    )


def attempts_of(model_dir: Path, eval_dir: Path) -> list[Attempt]:
    """Every rung tried up to this model (its own attempt last)."""
    prior = [Attempt.model_validate(a) for a in ladder_of(model_dir)["prior"]]
    return [*prior, attempt_of(model_dir, eval_dir)]


def should_escalate(model_dir: Path, eval_dir: Path) -> bool:
    """This rung failed its gates and a rung remains (the exact one)."""
    return (
        bool(ladder_of(model_dir)["remaining"]) and not GateReport.read(Path(eval_dir) / "gates.json").passed
    )


def rungs_of(meta: BatchMeta, p: BatchParams) -> list[dict[str, Any]]:
    """The batch's plan (written at data-split), or the whole ladder for a batch folder that has none."""
    return meta.plan if meta.plan is not None else plan(p, None, None)


def climb(
    batch_dir: Path, work: Path, rungs: list[dict[str, Any]], gates: Gates, prior: list[Attempt] | None = None
) -> tuple[Path, Path]:
    """Unlearn and evaluate each rung in turn until one passes -> the model and evaluation folders
    of the one that passed, else of the last one tried. The first rung tried writes
    ``work/model`` and ``work/evaluation`` (as a batch without a ladder did), the next ones
    ``work/rung-N/...``."""
    tried = list(prior or [])
    model_dir = eval_dir = work
    for i, rung in enumerate(rungs):
        at = work if i == 0 else work / f"rung-{rung['rung']}"
        model_dir, eval_dir = at / "model", at / "evaluation"
        unlearn_rung(batch_dir, model_dir, rung, tried, rungs[i + 1 :])
        evaluate(batch_dir, model_dir, eval_dir, gates)
        tried.append(attempt_of(model_dir, eval_dir))
        if tried[-1].gates_passed:
            break
    return model_dir, eval_dir


def copy_folder(src: Path, dst: Path) -> None:
    """A rung's folder into a KFP output artifact's path (which may already exist, empty)."""
    shutil.copytree(src, dst, dirs_exist_ok=True)


def deadlines(
    meta: BatchMeta, requests: dict, fulfilled: bool, default_days: int
) -> dict[str, dict[str, Any]]:
    """Per request: its due date and whether this batch met it (fulfilled by then)."""

    now = datetime.now(UTC)
    out = {}
    for rid in meta.request_ids:
        due = due_at(requests[rid], meta.deadline_days or default_days)
        out[rid] = {"due": due.isoformat(), "met": bool(fulfilled and now <= due)}
    return out


__all__ = [
    "LADDER",
    "Attempt",
    "attempts_of",
    "climb",
    "plan",
    "read_batch",
    "retrain_refusal",
    "should_escalate",
    "split_plan",
]


# --- the KFP tasks: the approximate rungs, then (when their gates fail) the exact one -------------


def approximate_rungs(batch_dir: str | Path, out_dir: str | Path, gates: Gates) -> None:
    """The unlearn task: the batch's rungs before the exact one (only the exact one for a batch
    that goes straight to it) -> ``out_dir``: the first that passes, else the last one (which the
    evaluate task evaluates; earlier ones are evaluated here to choose)."""
    import tempfile

    b, out = Path(batch_dir), Path(out_dir)
    meta = read_batch(b)
    approx, exact = split_plan(rungs_of(meta, BatchParams()))
    tried: list[Attempt] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, rung in enumerate(approx[:-1]):
            model_dir, eval_dir = Path(tmp) / f"rung-{i}" / "model", Path(tmp) / f"rung-{i}" / "evaluation"
            unlearn_rung(b, model_dir, rung, tried, approx[i + 1 :] + exact)
            evaluate(b, model_dir, eval_dir, gates)
            tried.append(attempt_of(model_dir, eval_dir))
            if tried[-1].gates_passed:
                copy_folder(model_dir, out)
                return
    unlearn_rung(b, out, approx[-1], tried, exact)


def next_rung(
    batch_dir: str | Path, model_dir: str | Path, eval_dir: str | Path, out_dir: str | Path
) -> None:
    """The retrain task: the rung after the one in ``model_dir`` (evaluated in ``eval_dir``),
    from the same base and split -> ``out_dir``."""
    prior = attempts_of(Path(model_dir), Path(eval_dir))
    remaining = ladder_of(Path(model_dir))["remaining"]
    unlearn_rung(Path(batch_dir), Path(out_dir), remaining[0], prior, remaining[1:])
