"""``rfau bench``: every method against retrain and do-nothing, in one run, on one machine.

For each seed: train the original once; for each scenario (one whole class, 10% random samples,
a structured sub-population of one class: ``rfau.data.subpopulation``) make the request, split,
run every method through the same unlearn stage, evaluate (with the per-sample evidence of
``rfau.metrics.evidence``), and compare with retrain. A second retrain with another seed
(``retrain_2``) gives the noise floor: its gap to ``retrain`` is the smallest gap any method can
honestly be expected to reach. Outputs: rows.csv (one row per seed x scenario x method; column
names are the metric JSON keys), table.md (mean +- std over seeds), plots (gap vs seconds with the
floor drawn), and bench.json (machine, settings).
"""

from __future__ import annotations

from rfau.bench.configs import (
    ALL_METHODS,
    CONFIGS,
    NOISE_FLOOR,
    SCENARIOS,
    BenchConfig,
    find_cifar10,
    holdout_salt,
    load_bench_dataset,
    method_settings,
)
from rfau.bench.report import aggregate, markdown_table, public_name, write_outputs
from rfau.bench.runner import run_bench, scenario_request

__all__ = [
    "ALL_METHODS",
    "CONFIGS",
    "NOISE_FLOOR",
    "SCENARIOS",
    "BenchConfig",
    "aggregate",
    "find_cifar10",
    "holdout_salt",
    "load_bench_dataset",
    "markdown_table",
    "method_settings",
    "public_name",
    "run_bench",
    "scenario_request",
    "write_outputs",
]
