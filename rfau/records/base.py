"""The one strict base every record derives from, and the on-disk record (write/read)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from rfau.errors import RfauError, validation_problems
from rfau.io import write_text_atomic


class StrictModel(BaseModel):
    """Every record here is written by rfau itself, so unknown keys are refused: a key a producer
    adds without modelling it fails loudly where it is written, not silently where it is read."""

    model_config = ConfigDict(extra="forbid")


class Record(StrictModel):
    """A stage record on disk. NaN (an accuracy on an empty set) is written as ``NaN``, as
    ``json.dumps`` writes it, so that it reads back as a float."""

    model_config = ConfigDict(ser_json_inf_nan="constants")
    omit_none: ClassVar[bool] = True  # None fields left off on disk (False: written as null)

    def write(self, path: str | Path) -> None:
        """Atomically: a reader sees the old file or the whole new one."""
        write_text_atomic(path, self.model_dump_json(indent=2, exclude_none=self.omit_none) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> Self:
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except OSError as e:
            raise RfauError(f"cannot read {path}: {e.strerror or e}") from None
        except ValidationError as e:
            raise RfauError(f"{path}: not a valid {cls.__name__}: {validation_problems(e)}") from None
