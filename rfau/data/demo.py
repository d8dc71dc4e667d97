"""Demo deletion requests: the scenarios `rfau run`, `rfau pipeline run --demo` and the bench
share (10% random training samples, or one whole class)."""

from __future__ import annotations

import random
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import rfau.data
from rfau.data.request_store import RequestState, RequestStore, requested_samples
from rfau.data.split import HOLDOUT_FRACTION, HOLDOUT_SALT, in_holdout
from rfau.io import write_json
from rfau.params import BatchParams

if TYPE_CHECKING:  # torch: imported only where a dataset is loaded
    from rfau.data.base import Dataset


def demo_request(
    ds: Dataset,
    scenario: str,
    out_dir: Path,
    seed: int | str = 0,
    fraction: float = 0.1,
    forget_class: str | None = None,
    exclude: AbstractSet[str] = frozenset(),
    request_id: str | None = None,
    subject: str | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    holdout_salt: str = HOLDOUT_SALT,
) -> Path:
    """Write a demo deletion request: 10% random training samples, or one whole class.
    ``exclude``: samples already forgotten (never drawn again); at most half the pool is drawn."""
    now = datetime.now(UTC).isoformat()
    if scenario == "random":
        # drawn from what the original model trained on (the holdout slice it never saw is left out)
        pool = [
            s
            for s in ds.split_ids("train")
            if s not in exclude and not in_holdout(s, holdout_fraction, holdout_salt)
        ]
        k = min(len(pool) // 2, round(fraction * len(ds.split_ids("train"))))
        req = {
            "request_id": request_id or f"demo-random-{seed}",
            "sample_ids": sorted(random.Random(seed).sample(pool, k)),
            "reason": f"demo: {fraction:.0%} random training samples",
            "received_at": now,
        }
    elif scenario == "class":
        cls = forget_class or ds.classes[3 % len(ds.classes)]
        req = {
            "request_id": f"demo-class-{cls}",
            "classes": [cls],
            "reason": f"demo: forget class {cls}",
            "received_at": now,
        }
    else:
        raise ValueError(f"unknown scenario {scenario!r}; use 'random' or 'class'")
    if subject:
        req["subject"] = subject
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{req['request_id']}.json"
    write_json(path, req)
    return path


def queue_demo_request(p: BatchParams, store: str) -> str:
    """Queue a demo request: 5% of the training samples not forgotten yet, drawn at random."""
    ds = rfau.data.load_dataset(p.dataset)
    reqs = RequestStore.from_uri(store)
    gone = set(requested_samples(reqs, ds, set(RequestState) - {RequestState.REJECTED})[0])
    rid = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    path = demo_request(
        ds,
        "random",
        Path("runs") / "requests",
        seed=rid,
        fraction=0.05,
        exclude=gone,
        request_id=rid,
        subject=f"user-{rid}",
        holdout_fraction=p.holdout_fraction,
    )
    reqs.add([path], ds)
    return rid
