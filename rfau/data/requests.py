"""Deletion requests: JSON files that name sample ids and/or whole classes to forget.

A file holds one request object or a list of them; a directory contributes its ``*.json`` files
in name order. Every problem is reported with the file and the request id it concerns.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rfau.data.ids import unsafe_id_reason
from rfau.errors import RequestError, validation_problems

if TYPE_CHECKING:  # torch: imported only where a dataset is loaded
    from rfau.data.base import Dataset


class DeletionRequest(BaseModel):
    """One person's (or one process's) request to delete data from the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    sample_ids: list[str] = Field(default_factory=list)
    classes: list[str] = Field(default_factory=list)
    reason: str = Field(min_length=1)
    received_at: datetime
    # who the data is about (user id, email...): the audit ledger keeps only a salted hash of it
    subject: str | None = Field(None, min_length=1, max_length=500)
    # days from received_at to the deletion's due date; None: the batch's deadline_days
    deadline_days: int | None = Field(None, ge=1)


def load_requests(paths: list[str | Path]) -> list[tuple[str, DeletionRequest]]:
    """Parse request files (or directories of them) -> [(source, request)], checked for form."""
    out: list[tuple[str, DeletionRequest]] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(p.glob("*.json"))
        elif p.is_file():
            files = [p]
        else:
            raise RequestError(f"{p}: no such request file or directory")
        for f in files:
            out.extend(_parse_file(f))
    if not out:
        raise RequestError(f"no deletion requests found in {', '.join(map(str, paths)) or 'nothing'}")
    seen: dict[str, str] = {}
    for src, req in out:
        if req.request_id in seen:
            raise RequestError(
                f"{src}: request {req.request_id!r}: request id already used in {seen[req.request_id]}"
            )
        seen[req.request_id] = src
    return out


MAX_REQUEST_FILE_BYTES = 10 * 1024 * 1024
"""Request files above this are refused before parsing (JSON takes ~15x its size in memory)."""


def _parse_file(f: Path) -> list[tuple[str, DeletionRequest]]:
    try:
        size = f.stat().st_size
        if size > MAX_REQUEST_FILE_BYTES:
            raise RequestError(
                f"{f}: request file is {size} bytes, over the {MAX_REQUEST_FILE_BYTES} byte limit; "
                "split it into several files"
            )
        raw = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"{f}: malformed JSON: {e}") from None
    except RecursionError:
        raise RequestError(f"{f}: malformed JSON: nested too deeply to be a request") from None
    except OSError as e:
        raise RequestError(f"{f}: cannot read request file: {e}") from None
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for i, item in enumerate(items):
        where = f"{f}" if not isinstance(raw, list) else f"{f}[{i}]"
        rid = item.get("request_id", "?") if isinstance(item, dict) else "?"
        if not isinstance(item, dict):
            raise RequestError(f"{where}: a request must be a JSON object, got {type(item).__name__}")
        try:
            out.append((where, DeletionRequest.model_validate(item)))
        except ValidationError as e:
            raise RequestError(f"{where}: request {rid!r}: {validation_problems(e, 'request')}") from None
    return out


def resolve_forget_set(
    requests: list[tuple[str, DeletionRequest]], dataset: Dataset
) -> tuple[list[str], list[str]]:
    """Check every request against the dataset -> (forget ids sorted, whole classes forgotten).

    Raises RequestError naming the request and the problem for: empty requests, path tricks,
    duplicate ids, unknown ids, test-split ids, unknown classes, and a batch that would remove
    every training sample.
    """
    train_ids = dataset.split_ids("train")
    train_set = set(train_ids)
    by_class: dict[str, list[str]] = {c: [] for c in dataset.classes}
    for sid in train_ids:
        by_class[dataset.class_of(sid)].append(sid)
    forget: set[str] = set()
    classes: set[str] = set()
    for src, req in requests:
        where = f"{src}: request {req.request_id!r}"
        if not req.sample_ids and not req.classes:
            raise RequestError(f"{where}: empty request (no sample_ids and no classes)")
        for sid in req.sample_ids:
            reason = unsafe_id_reason(sid)
            if reason:
                raise RequestError(f"{where}: sample id {sid!r} rejected: {reason}")
        for name, values in (("sample id", req.sample_ids), ("class", req.classes)):
            dupes = sorted(v for v, n in Counter(values).items() if n > 1)
            if dupes:
                raise RequestError(f"{where}: duplicate {name}s {dupes[:5]}")
        unknown_cls = [c for c in req.classes if c not in by_class]
        if unknown_cls:
            raise RequestError(
                f"{where}: unknown classes {unknown_cls[:5]} (known: {', '.join(dataset.classes)})"
            )
        unknown = [s for s in req.sample_ids if s not in dataset.index]
        if unknown:
            raise RequestError(
                f"{where}: {len(unknown)} unknown sample ids, e.g. {unknown[:3]} "
                f"(not in dataset {dataset.name!r})"
            )
        in_test = [s for s in req.sample_ids if s not in train_set]
        if in_test:
            raise RequestError(
                f"{where}: {len(in_test)} sample ids are in the test split, e.g. {in_test[:3]}; "
                "only training data can be forgotten"
            )
        forget.update(req.sample_ids)
        for c in req.classes:
            forget.update(by_class[c])
            classes.add(c)
    if forget >= train_set:
        raise RequestError(
            f"the requests {[r.request_id for _, r in requests]} would remove every training sample; "
            "nothing would be left to keep the model working"
        )
    # a class is forgotten as a whole also when every one of its samples is named one by one
    whole = sorted(c for c, ids in by_class.items() if ids and forget.issuperset(ids))
    return sorted(forget), whole


def samples_of(statuses: list, ds: Dataset) -> tuple[list[str], list[str]]:
    """(the sample ids the requests name, their request ids)."""
    ids: set[str] = set()
    for st in statuses:
        ids.update(resolve_forget_set([(f"request {st.request_id}", st.request)], ds)[0])
    return sorted(ids), [st.request_id for st in statuses]
