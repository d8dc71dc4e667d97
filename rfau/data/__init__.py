"""Datasets, deletion requests and the retain/forget/holdout/test split."""

from rfau.data.datasets import ImageDataset, load_dataset
from rfau.data.requests import DeletionRequest, load_requests, resolve_forget_set
from rfau.data.split import Split, make_split, read_split, write_split
from rfau.data.text import TextDataset, load_text_dataset  # also registers text with load_dataset

__all__ = [
    "DeletionRequest",
    "ImageDataset",
    "Split",
    "TextDataset",
    "load_dataset",
    "load_requests",
    "load_text_dataset",
    "make_split",
    "read_split",
    "resolve_forget_set",
    "write_split",
]
