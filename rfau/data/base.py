"""The dataset base every kind of data shares: samples held in memory with a stable string id each.

Images (``rfau.data.datasets.ImageDataset``) and text records (``rfau.data.text.TextDataset``) are
its siblings; code that only needs ids, labels and splits takes a ``Dataset``. A leaf module: it
imports no other module of the project but the errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypeVar

import torch

from rfau.errors import DatasetError


@dataclass(frozen=True)
class Dataset:
    """All samples of a dataset: ``x`` one row per sample (uint8 images [N, C, H, W], or token ids),
    ``y`` int64 [N] class indices, ``is_test`` the fixed test split."""

    name: str
    ids: tuple[str, ...]
    x: torch.Tensor
    y: torch.Tensor
    is_test: torch.Tensor
    classes: tuple[str, ...]
    kind: str  # e.g. "digits", "imagefolder", "text": picks default model and augmentation
    index: dict[str, int] = field(repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            object.__setattr__(self, "index", {sid: i for i, sid in enumerate(self.ids)})

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def split_ids(self, split: str) -> list[str]:
        want = split == "test"
        return [sid for sid, t in zip(self.ids, self.is_test.tolist()) if t == want]

    def indices(self, ids: list[str] | tuple[str, ...]) -> torch.Tensor:
        try:
            return torch.tensor([self.index[s] for s in ids], dtype=torch.long)
        except KeyError as e:
            raise DatasetError(f"dataset {self.name!r} has no sample with id {e.args[0]!r}") from None

    def class_of(self, sample_id: str) -> str:
        return self.classes[int(self.y[self.index[sample_id]])]


D = TypeVar("D", bound=Dataset)


def subset_dataset(ds: D, train_per_class: int | None, test_per_class: int | None) -> D:
    """The first N training and M test samples of each class (in id order): a smaller benchmark."""
    if train_per_class is None and test_per_class is None:
        return ds
    keep: list[int] = []
    seen: dict[tuple[bool, int], int] = {}
    for i, (t, c) in enumerate(zip(ds.is_test.tolist(), ds.y.tolist())):
        cap = test_per_class if t else train_per_class
        key = (t, c)
        if cap is None or seen.get(key, 0) < cap:
            seen[key] = seen.get(key, 0) + 1
            keep.append(i)
    idx = torch.tensor(keep)
    return replace(  # a subclass's own fields (e.g. a text set's texts) are its caller's to subset
        ds,
        name=f"{ds.name}[train {train_per_class}/class, test {test_per_class}/class]",
        ids=tuple(ds.ids[i] for i in keep),
        x=ds.x[idx].contiguous(),
        y=ds.y[idx],
        is_test=ds.is_test[idx],
        index={},
    )


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """A dataset's ``x`` as a model takes it: images scaled to [0, 1], token ids as they are."""
    if x_uint8.dtype != torch.uint8:  # token ids of a text dataset are not pixels: the model takes them
        return x_uint8
    return x_uint8.float().div_(255.0)
