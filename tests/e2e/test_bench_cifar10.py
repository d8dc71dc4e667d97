"""The CIFAR-10 GPU config (`rfau bench cifar10`) started on the CPU with a size limit: the full-width
ResNet-18 and the bench's machinery on the real archive (skipped where the archive is absent)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from tests.support.cli import run_cli

CIFAR = os.environ.get("RFAU_CIFAR10") or str(
    Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cifar10" / "cifar10-imagefolder.tar.gz"
)


@pytest.mark.skipif(
    not Path(CIFAR).exists(), reason=f"CIFAR-10 archive not found at {CIFAR} (set RFAU_CIFAR10)"
)
@pytest.mark.e2e
def test_cifar10_gpu_config_starts_on_cpu_with_a_size_limit(tmp_path):
    res = run_cli(
        "bench",
        "cifar10",
        "--data",
        CIFAR,
        "--max-train-per-class",
        "2",
        "--max-test-per-class",
        "1",
        "--epochs",
        "1",
        "--scenarios",
        "class",
        "--methods",
        "original,rfau",
        "--device",
        "cpu",
        "-o",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(tmp_path / "rows.csv")))
    assert {r["method"] for r in rows} == {"original", "rfau", "retrain", "retrain_2"}
    assert int(rows[0]["total_params"]) > 11_000_000  # the full-width ResNet-18
