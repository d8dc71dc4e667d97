"""`rfau bench digits` (the one benchmark CI runs) and the CIFAR-10 configs' data handling."""

from __future__ import annotations

import csv
import json

import pytest

from rfau.bench import find_cifar10
from rfau.errors import RfauError
from tests.support.cli import run_cli


@pytest.mark.e2e
def test_bench_digits_writes_table_csv_gates_and_plots(tmp_path):
    # the machinery on two methods and a short recipe; the full table is a benchmark, not a test
    res = run_cli(
        "bench",
        "digits",
        "--seeds",
        "1",
        "--methods",
        "original,rfau",
        "--scenarios",
        "class,structured",
        "--epochs",
        "3",
        "-o",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(tmp_path / "rows.csv")))
    methods = {r["method"] for r in rows}
    assert methods == {"original", "rfau", "retrain", "retrain_2"}  # retrain_2: the noise floor
    assert {r["scenario"] for r in rows} == {"class", "structured"}
    for r in rows:
        if r["method"] == "retrain":
            assert float(r["avg_gap"]) == 0.0 and float(r["js_to_retrain"]) == 0.0
        assert float(r["peak_rss_mb"]) > 0 and r["cuda_rise_mb"] == ""  # CPU: no CUDA memory
    rfau_rows = [r for r in rows if r["method"] == "rfau"]
    assert all(int(r["trainable_params"]) / int(r["total_params"]) <= 0.05 for r in rfau_rows)
    table = (tmp_path / "table.md").read_text()
    assert "| rfau |" in table and "CPU only" in table
    assert "gates pass %" in table and "s to certified" in table
    for r in rows:  # every model through the default gates, the original as champion
        assert r["gates_passed"] in ("0.0", "100.0")
        if r["method"] == "original":
            assert r["gates_passed"] == "0.0" and r["failed_gates"]  # doing nothing never passes
            if r["scenario"] == "class":
                assert "forget_accuracy" in r["failed_gates"] and r["gate_forgotten_class_vs_test_auc"]
        else:  # the ladder [method, retrain]: its own seconds if it passes, plus retrain's if not
            retrain = next(
                float(x["seconds"])
                for x in rows
                if x["method"] == "retrain" and x["scenario"] == r["scenario"]
            )
            extra = 0.0 if r["gates_passed"] == "100.0" or r["method"].startswith("retrain") else retrain
            assert float(r["certified_seconds"]) == pytest.approx(float(r["seconds"]) + extra)
    assert "| original | 0 | FAIL |" in (tmp_path / "gates.md").read_text()
    for name in (
        "gap_vs_time_class.png",
        "gap_vs_time_structured.png",
        "mia_hist_class.png",
        "mia_hist_structured.png",
    ):
        assert (tmp_path / name).stat().st_size > 1000
    # the memory each method needs, each in a fresh process over the run's saved original and split
    res = run_cli("bench-memory", str(tmp_path), "--scenarios", "class", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["method"]: r for r in json.loads((tmp_path / "memory.json").read_text())["rows"]}
    assert set(rows) == {"original", "finetune", "rfau"}
    assert all(r["baseline_rss_mb"] > 0 and r["cuda_rise_mb"] is None for r in rows.values())
    assert (
        rows["finetune"]["rss_rise_mb"] > 0
        and rows["rfau"]["trainable_params"] < rows["finetune"]["total_params"]
    )
    assert "| class | rfau |" in (tmp_path / "memory.md").read_text()


def test_bench_memory_without_a_bench_run_is_a_clear_error(tmp_path):
    res = run_cli("bench-memory", str(tmp_path))
    assert res.returncode != 0 and "no bench run" in res.stderr
    assert not (tmp_path / "memory.json").exists()


def test_missing_cifar10_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(RfauError, match="CIFAR-10 not found at"):
        find_cifar10(str(tmp_path / "nope.tar.gz"))
    monkeypatch.setenv("RFAU_CIFAR10", str(tmp_path / "absent"))
    with pytest.raises(RfauError, match="RFAU_CIFAR10"):
        find_cifar10(None)
    res = run_cli("bench", "cifar10-small", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "o"))
    assert res.returncode != 0 and "CIFAR-10 not found" in res.stderr
    assert not (tmp_path / "o").exists()


def test_the_spread_over_seeds_is_not_replaced_by_a_metrics_own_spread():
    """The member rate carries its own binomial spread (``..._std``); the tables' ± is over seeds."""
    from rfau.bench import aggregate

    rows = [
        {
            "scenario": "random",
            "method": "rfau",
            "trainable_params": 1,
            "total_params": 10,
            "forget_member_rate_at_10fpr": rate,
            "forget_member_rate_at_10fpr_std": 3.0,
        }
        for rate in (10.0, 20.0)
    ]
    (agg,) = aggregate(rows)
    assert agg["forget_member_rate_at_10fpr"] == 15.0
    assert abs(agg["forget_member_rate_at_10fpr_std"] - 7.071) < 1e-3


def test_time_to_a_certified_deletion_adds_retrain_when_the_first_rung_fails():
    from rfau.bench.gates import certified_seconds

    rows = [
        {"method": "original", "seconds": 0.0, "gates_passed": 0.0},
        {"method": "retrain", "seconds": 90.0, "gates_passed": 100.0},
        {"method": "rfau", "seconds": 5.0, "gates_passed": 0.0},
        {"method": "salun", "seconds": 20.0, "gates_passed": 100.0},
    ]
    certified_seconds(rows)
    got = {r["method"]: (r["certified_seconds"], r["first_rung_passed"]) for r in rows}
    assert got == {
        "original": (None, None),
        "retrain": (90.0, 100.0),
        "rfau": (95.0, 0.0),  # escalated: RFAU's 5 s, then retrain's 90 s
        "salun": (20.0, 100.0),
    }
