"""What the batch stages hand each other, typed: written with ``model_dump_json`` and read back with
``model_validate_json``. File names and keys on disk stay what dvc.yaml, the KFP components and
the tests read (``batch.json`` ...).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from rfau.errors import RfauError, validation_problems


class Record(BaseModel):
    """A stage record: unknown keys kept (older or newer writers), None fields left off on disk."""

    model_config = ConfigDict(extra="allow")

    def write(self, path: str | Path) -> None:
        """Atomically: a reader sees the old file or the whole new one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n")
        tmp.replace(path)

    @classmethod
    def read(cls, path: str | Path):
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except ValidationError as e:
            raise RfauError(f"{path}: not a valid {cls.__name__}: {validation_problems(e)}") from None


class Rejection(BaseModel):
    request_id: str
    reason: str


class BaseVersion(BaseModel):
    """The registered model a batch starts from (the champion when it began)."""

    model: str
    version: int
    weights_sha256: str


class BatchMeta(Record):
    """batch.json: the requests a batch took, its forget set and its base model."""

    batch_id: str
    dataset: str
    dataset_uri: str
    store: str
    model: str
    started_at: str
    code_version: str
    request_ids: list[str]
    rejected: list[Rejection]
    deferred: list[Rejection] = []  # valid, but not admissible together with earlier ones: still pending
    empty: bool = True
    prior_request_ids: list[str] | None = None
    forget_count: int | None = None
    forget_classes: list[str] | None = None
    excluded_count: int | None = None
    forget_md5: str | None = None
    base: BaseVersion | None = None
    already_forgotten: bool | None = None

    @property
    def rejected_ids(self) -> list[str]:
        return [r.request_id for r in self.rejected]

    def skip_reason(self) -> str:
        return "no pending requests" if not self.request_ids else "nothing left to forget"
