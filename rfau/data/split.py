"""The split: training data -> retain / forget / holdout, plus the test split.

The holdout ("calibration") slice is a fixed, id-hashed share of the training split that the
original model is never trained on (the salt names the draw: ``HOLDOUT_SALT`` unless a caller
draws another, as the bench does per seed). It tells the sample-wise forgetting target what *unseen*
data of each class looks like to the model, without touching the test set used for evaluation.
Because membership depends only on (id, salt, fraction), the bootstrap stage that trains the
original model and every later split agree on it without storing lists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rfau.data.requests import DeletionRequest, resolve_forget_set
from rfau.errors import RequestError, RfauError
from rfau.io import atomic_dir

if TYPE_CHECKING:  # torch: imported only where a dataset is loaded
    from rfau.data.base import Dataset

MANIFESTS = ("retain", "forget", "holdout", "test")
HOLDOUT_SALT = "rfau-holdout-v1"
HOLDOUT_FRACTION = 0.1  # default share of the training split held out for calibration


def in_holdout(sample_id: str, fraction: float, salt: str = HOLDOUT_SALT) -> bool:
    digest = hashlib.sha256(f"{salt}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def ids_hash(ids: list[str] | tuple[str, ...]) -> str:
    """Content hash of a set of ids (order-independent)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


@dataclass
class Split:
    dataset: str
    retain: list[str]
    forget: list[str]
    holdout: list[str]
    test: list[str]
    forget_classes: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    holdout_fraction: float = HOLDOUT_FRACTION
    holdout_salt: str = HOLDOUT_SALT
    # forgotten by earlier batches: out of retain and holdout for good, so they stay forgotten
    excluded: list[str] = field(default_factory=list)

    def is_holdout(self, sample_id: str) -> bool:
        """Whether the id falls in this split's holdout draw (an id now in forget too)."""
        return in_holdout(sample_id, self.holdout_fraction, self.holdout_salt)

    @property
    def forget_hash(self) -> str:
        return ids_hash(self.forget)

    def summary(self) -> dict:
        return {
            "dataset": self.dataset,
            "counts": {m: len(getattr(self, m)) for m in MANIFESTS} | {"excluded": len(self.excluded)},
            "forget_sha256": self.forget_hash,
            "forget_classes": self.forget_classes,
            "request_ids": self.request_ids,
            "holdout_fraction": self.holdout_fraction,
            "holdout_salt": self.holdout_salt,
        }


def make_split(
    dataset: Dataset,
    requests: list[tuple[str, DeletionRequest]],
    holdout_fraction: float = HOLDOUT_FRACTION,
    excluded: list[str] | tuple[str, ...] = (),
    holdout_salt: str = HOLDOUT_SALT,
) -> Split:
    """Validate the requests and partition the training split. Pure: writes nothing.
    ``excluded``: ids forgotten by earlier batches; they join neither retain nor holdout, and a
    request naming one again does not put it back into the forget set."""
    if not 0.0 <= holdout_fraction < 0.5:
        raise RfauError(f"holdout_fraction must be in [0, 0.5), got {holdout_fraction}")
    forget, classes = resolve_forget_set(requests, dataset) if requests else ([], [])
    gone = set(excluded)
    forget = [s for s in forget if s not in gone]
    fset = set(forget) | gone
    retain: list[str] = []
    holdout: list[str] = []
    for sid in dataset.split_ids("train"):
        if sid in fset:
            continue
        (holdout if in_holdout(sid, holdout_fraction, holdout_salt) else retain).append(sid)
    if not retain:
        raise RequestError(
            f"the requests {[r.request_id for _, r in requests]} leave no retain samples "
            "(all remaining training data is the calibration holdout)"
        )
    return Split(
        dataset=dataset.name,
        retain=retain,
        forget=forget,
        holdout=holdout,
        test=dataset.split_ids("test"),
        forget_classes=classes,
        request_ids=[r.request_id for _, r in requests],
        holdout_fraction=holdout_fraction,
        holdout_salt=holdout_salt,
        excluded=sorted(gone),
    )


def write_split(split: Split, out_dir: str | Path) -> Path:
    """Write ``<manifest>.txt`` (one id per line) and ``split.json``; all or nothing."""
    with atomic_dir(out_dir, "split") as tmp:
        for m in (*MANIFESTS, "excluded"):
            ids = getattr(split, m)
            (tmp / f"{m}.txt").write_text("".join(f"{s}\n" for s in ids))
        (tmp / "split.json").write_text(json.dumps(split.summary(), indent=2) + "\n")
    return Path(out_dir)


def read_split(split_dir: str | Path) -> Split:
    d = Path(split_dir)
    meta_file = d / "split.json"
    if not meta_file.is_file():
        raise RfauError(f"{d} is not a split folder (no split.json); run `rfau split` first")
    meta = json.loads(meta_file.read_text())
    lists = {m: [ln for ln in (d / f"{m}.txt").read_text().splitlines() if ln] for m in MANIFESTS}
    excl = d / "excluded.txt"
    lists["excluded"] = [ln for ln in excl.read_text().splitlines() if ln] if excl.exists() else []
    split = Split(
        dataset=meta["dataset"],
        forget_classes=meta.get("forget_classes", []),
        request_ids=meta.get("request_ids", []),
        holdout_fraction=meta.get("holdout_fraction", HOLDOUT_FRACTION),
        holdout_salt=meta.get("holdout_salt", HOLDOUT_SALT),
        **lists,
    )
    if split.forget_hash != meta["forget_sha256"]:
        raise RfauError(f"{d}/forget.txt does not match the hash in split.json: the split was edited")
    return split


Regime = Literal["none", "class", "sample", "mixed"]
REGIMES: tuple[Regime, ...] = ("none", "class", "sample", "mixed")


def forget_regime(split: Split, dataset: Dataset) -> Regime:
    """What the split asks to forget, whatever method unlearns it: ``class`` when every forget
    sample belongs to a class forgotten whole, ``sample`` when none does, ``mixed`` for both in
    one batch, ``none`` for an empty forget set. The one place the regime is decided; the
    evaluation records it and the gates read it from there (a method setting never decides it)."""
    if not split.forget:
        return "none"
    gone = set(split.forget_classes)
    whole = sum(dataset.class_of(sid) in gone for sid in split.forget)
    if whole == 0:
        return "sample"
    return "class" if whole == len(split.forget) else "mixed"


def excluded_classes(split: Split, dataset: Dataset) -> list[str]:
    """The classes earlier batches forgot whole: every training sample of the class is in
    ``split.excluded``. Their test images are no longer the model's task: the evaluation keeps
    them out of the kept classes and of the membership attack's non-members."""
    gone = {dataset.class_of(s) for s in split.excluded}
    # the split partitions the training data: a class with no sample elsewhere went whole
    still = {dataset.class_of(s) for s in (*split.retain, *split.holdout, *split.forget)} if gone else set()
    return [c for c in dataset.classes if c in gone and c not in still]


__all__ = [
    "REGIMES",
    "Regime",
    "Split",
    "excluded_classes",
    "forget_regime",
    "make_split",
    "write_split",
    "read_split",
    "in_holdout",
    "ids_hash",
]


@dataclass
class Admission:
    """Which claimed requests a batch takes: the rest wait (deferred) or are refused (rejected)."""

    admitted: list[tuple[str, DeletionRequest]] = field(default_factory=list)
    deferred: list[tuple[str, DeletionRequest, str]] = field(default_factory=list)  # stay pending
    rejected: list[tuple[str, DeletionRequest, str]] = field(default_factory=list)  # invalid alone


def admit_requests(
    dataset: Dataset,
    requests: list[tuple[str, DeletionRequest]],
    holdout_fraction: float = HOLDOUT_FRACTION,
    excluded: list[str] | tuple[str, ...] = (),
) -> Admission:
    """Greedy in arrival order: a request invalid on its own is rejected; a valid one is admitted
    when make_split still succeeds with it added to those admitted so far (retain samples remain),
    otherwise deferred with the reason, so one blocking combination never stalls every batch."""
    out = Admission()
    for src, req in requests:
        try:
            resolve_forget_set([(src, req)], dataset)
        except RequestError as e:
            out.rejected.append((src, req, str(e)))
            continue
        try:
            make_split(dataset, [*out.admitted, (src, req)], holdout_fraction, excluded)
        except RequestError as e:
            if not out.admitted:  # alone, on what is left after earlier deletions: never admissible
                out.rejected.append((src, req, f"cannot be forgotten even alone: {e}"))
            else:  # admissible once the requests before it are settled (the next batch)
                out.deferred.append((src, req, f"deferred: together with the requests before it: {e}"))
            continue
        out.admitted.append((src, req))
    return out


def training_record(split: Split, train_config: dict, metrics: dict, kind: str) -> dict[str, Any]:
    """The model-card fields of a model trained on ``split``'s retain set: what it saw, the holdout
    it never saw, its fit, and its lineage (rfau.stages.train_stage, the backbone fine-tune)."""
    return {
        "train_manifest_sha256": ids_hash(split.retain),
        "train_samples": len(split.retain),
        "holdout_fraction": split.holdout_fraction,
        "holdout_salt": split.holdout_salt,
        "metrics": {k: metrics[k] for k in ("ra", "ta")},
        "lineage": {
            "kind": kind,
            "train_config": train_config,
            "forget_sha256": split.forget_hash,
            "request_ids": split.request_ids,
        },
    }
