"""What every batch stage shares: the batch folder, its id, the skip marker."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

from rfau.errors import RfauError
from rfau.io import atomic_dir
from rfau.records import BatchMeta, RecordedBatch, Skipped

BATCH = "batch.json"
EVIDENCE = ("metrics.json", "gates.json", "report.md", "confidence_hist.png")


def new_batch_id() -> str:
    return f"batch-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def read_batch(batch_dir: str | Path) -> BatchMeta:
    path = Path(batch_dir) / BATCH
    if not path.is_file():
        raise RfauError(
            f"{batch_dir} is not a batch folder ({BATCH} is missing); run the data-split stage first"
        )
    return BatchMeta.read(path)


def _skip(out_dir: Path, meta: BatchMeta, name: str, command: str) -> Skipped:
    info = Skipped(batch_id=meta.batch_id, reason=meta.skip_reason())
    with atomic_dir(out_dir, command) as tmp:
        info.write(tmp / name)
    return info


def _batch_records(trail) -> list[RecordedBatch]:
    """The ledger's batch records, as a batch reads them."""
    return [RecordedBatch.model_validate(r) for r in trail.records()]
