"""Architectures and safetensors checkpoints with JSON model cards.

The names below load on first use (PEP 562): the model card (rfau.models.card) is read without
torch, which the architectures and checkpoints import.
"""

from rfau.lazy import lazy_exports

_EXPORTS = {
    "ARCHITECTURES": "rfau.models.arch",
    "build_model": "rfau.models.arch",
    "default_architecture": "rfau.models.arch",
    "ModelCard": "rfau.models.card",
    "read_card": "rfau.models.card",
    "count_parameters": "rfau.models.checkpoint",
    "load_checkpoint": "rfau.models.checkpoint",
    "save_checkpoint": "rfau.models.checkpoint",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
