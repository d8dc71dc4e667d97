"""Datasets, deletion requests and the retain/forget/holdout/test split.

The names below load on first use (PEP 562): commands that only read requests or the registry
(``rfau request list``, ``rfau models``, ``rfau --help``) then start without importing torch.
"""

from rfau.lazy import lazy_exports

_EXPORTS = {
    "Dataset": "rfau.data.base",
    "ImageDataset": "rfau.data.datasets",
    "load_dataset": "rfau.data.datasets",
    "DeletionRequest": "rfau.data.requests",
    "load_requests": "rfau.data.requests",
    "resolve_forget_set": "rfau.data.requests",
    "Split": "rfau.data.split",
    "make_split": "rfau.data.split",
    "read_split": "rfau.data.split",
    "write_split": "rfau.data.split",
    "TextDataset": "rfau.data.text",
    "load_text_dataset": "rfau.data.text",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
