"""The unlearn stage: forget the batch's forget set from its base model."""

from __future__ import annotations

from pathlib import Path

from rfau.batch.common import _skip, read_batch
from rfau.io import claim_output
from rfau.records import Skipped, UnlearnInfo
from rfau.stages import unlearn_stage

STAGE = "batch unlearn"  # what its output folder is marked as written by


def unlearn(
    batch_dir: str | Path, out_dir: str | Path, method: str = "rfau", config: dict | None = None
) -> UnlearnInfo | Skipped:
    """Forget the batch's forget set from its base model (the champion) -> model folder."""

    claim_output(out_dir, STAGE)
    meta = read_batch(batch_dir)
    if meta.empty:
        return _skip(Path(out_dir), meta, "unlearn.json", STAGE)
    b = Path(batch_dir)
    return unlearn_stage(b / "base", meta.dataset_uri, b / "split", out_dir, method, config, STAGE)
