"""What the stages of one batch work with: its settings, one registry, the request store and the
audit trail. A driver (``run_batch``, a CLI command, a KFP task) makes one and passes it to each
stage it runs, so a batch connects to the registry once and every question about it ("is there a
registry?", "which store?") is answered here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rfau.audit.trail import AuditTrail
from rfau.batch.common import read_batch
from rfau.data.request_store import RequestStore, default_store
from rfau.tracking.registry import Registry
from rfau.tracking.settings import TrackingSettings


@dataclass
class BatchContext:
    """Each part is made on first use: a registry connects (and a local one is created) only
    when a stage needs it; ask ``has_registry`` before merely looking."""

    settings: TrackingSettings
    store_uri: str

    @classmethod
    def open(cls, store: str | None = None, settings: TrackingSettings | None = None) -> BatchContext:
        """``store`` (a folder or s3://bucket/prefix), else the default one; ``settings``, else
        the environment's."""
        settings = settings or TrackingSettings.from_env()
        return cls(settings, store or default_store(settings))

    @classmethod
    def of_batch(
        cls, batch_dir: str | Path, settings: TrackingSettings | None = None, store: str | None = None
    ) -> BatchContext:
        """A batch folder's after data-split: the store it claimed from (unless ``store`` is
        given) and ``settings``, else the environment's."""
        meta = read_batch(batch_dir)
        return cls(settings or TrackingSettings.from_env(), store or meta.store)

    def has_registry(self) -> bool:
        """Whether a registry exists to be read (a local one is not created just to look)."""
        return self.settings.registry_exists()

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.settings)

    @cached_property
    def requests(self) -> RequestStore:
        """The request store; one never initialised is an error, not an empty queue."""
        return RequestStore.open(self.store_uri)

    @cached_property
    def trail(self) -> AuditTrail:
        return AuditTrail.open(self.store_uri, self.settings, lambda: self.registry)
