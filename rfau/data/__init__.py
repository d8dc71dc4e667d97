"""Datasets, deletion requests and the retain/forget/holdout/test split."""

from rfau.data.datasets import ImageDataset, load_dataset
from rfau.data.requests import DeletionRequest, load_requests, resolve_forget_set
from rfau.data.split import Split, make_split, read_split, write_split

__all__ = [
    "DeletionRequest",
    "ImageDataset",
    "Split",
    "load_dataset",
    "load_requests",
    "make_split",
    "read_split",
    "resolve_forget_set",
    "write_split",
]
