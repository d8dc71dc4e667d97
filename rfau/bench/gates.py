"""The promotion gates in ``rfau bench``: each method's model judged as a batch would judge it.

Every bench row gets the verdict of the default ``Gates`` (the original as the champion the
model was unlearned from) and the evidence gates' values and bounds, and gates.md lists them per
seed: the table that shows whether the bounds pass retrain and fail the original.
"""

from __future__ import annotations

from pathlib import Path

from rfau.gates import Gates, check_gates
from rfau.records import Evaluation, GateResult

# the evidence gates whose value and bound the gate table shows (class-wise, then sample-wise)
EVIDENCE_GATES = (
    "forgotten_class_vs_unseen_auc",
    "forgotten_class_vs_test_auc",
    "forgotten_class_member_rate",
    "forget_vs_unseen_auc",
    "forget_vs_test_auc",
    "forget_member_rate_at_10fpr",
    "forget_member_rate_at_10fpr_test",
)


def gate_columns(metrics: dict, champion: dict, gates: Gates | None = None) -> dict:
    """The gate verdict of one model as bench row columns: ``gates_passed`` (100 or 0, so that
    its mean over seeds is a pass rate), ``failed_gates``, ``unmeasurable_gates`` and, per
    evidence gate, ``gate_<name>`` = "value/bound" (or "n/m": not measurable)."""
    after, before = Evaluation.model_validate(metrics), Evaluation.model_validate(champion)
    results = check_gates(after, before, gates or Gates()).gates
    cols: dict = {
        "gates_passed": 100.0 if all(r.passed for r in results) else 0.0,
        "failed_gates": ";".join(r.name for r in results if not r.passed),
        "unmeasurable_gates": ";".join(r.name for r in results if not r.measurable),
    }
    by_name = {r.name: r for r in results}
    for name in EVIDENCE_GATES:  # every row the same columns (rows.csv): "" where the regime has none
        cols[f"gate_{name}"] = _value_bound(by_name[name]) if name in by_name else ""
    return cols


def certified_seconds(srows: list[dict], exact: tuple[str, ...] = ("retrain", "retrain_2")) -> None:
    """``certified_seconds`` of each method's row in one scenario and seed: the time to a deletion
    that passes the gates along the escalation ladder [method, retrain], i.e. the method's own
    seconds when its model passes, else those plus retrain's (the exact rung, which ends every
    ladder); ``first_rung_passed`` says which. The original ("do nothing") gets neither."""
    retrain = next(r["seconds"] for r in srows if r["method"] == "retrain")
    for r in srows:
        if r["method"] == "original":
            r["certified_seconds"] = r["first_rung_passed"] = None
            continue
        passed = bool(r["gates_passed"]) or r["method"] in exact
        r["first_rung_passed"] = 100.0 if r["gates_passed"] else 0.0
        r["certified_seconds"] = r["seconds"] + (0.0 if passed else retrain)


def _value_bound(r: GateResult) -> str:
    if not r.measurable or r.value is None or r.bound is None:
        return "n/m"
    return f"{r.value:.3g}/{r.bound:.3g}"


def gate_table(name: str, rows: list[dict], machine: str) -> str:
    """Markdown: per scenario, method and seed, the verdict and each evidence gate's value/bound."""
    lines = [
        f"### Promotion gates in `rfau bench {name}` on {machine}",
        "",
        "Each model through the default gates (`rfau.gates.Gates`), the original as the champion. "
        "Cells: value/bound (a gate fails when value > bound; n/m: not measurable). "
        "unseen = the forgotten class's holdout images (never trained on); test = its test images.",
        "",
    ]
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        srows = [r for r in rows if r["scenario"] == scenario]
        shown = [g for g in EVIDENCE_GATES if any(r.get(f"gate_{g}") for r in srows)]
        lines += [
            f"**{scenario}**",
            "",
            "| method | seed | gates | " + " | ".join(shown) + " | failed |",
            "|---|---|---|" + "---|" * (len(shown) + 1),
        ]
        for r in sorted(srows, key=lambda r: (r["method"], r["seed"])):
            cells = " | ".join(r.get(f"gate_{g}", "–") for g in shown)
            verdict = "PASS" if r["gates_passed"] else "FAIL"
            lines.append(
                f"| {r['method']} | {r['seed']} | {verdict} | {cells} | {r['failed_gates'] or '–'} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_gate_table(path: Path, name: str, rows: list[dict], machine: str) -> None:
    if rows and "gates_passed" in rows[0]:
        path.write_text(gate_table(name, rows, machine) + "\n")


__all__ = ["EVIDENCE_GATES", "certified_seconds", "gate_columns", "gate_table", "write_gate_table"]
