"""Architectures and safetensors checkpoints with JSON model cards."""

from rfau.models.arch import ARCHITECTURES, build_model, default_architecture
from rfau.models.checkpoint import ModelCard, count_parameters, load_checkpoint, read_card, save_checkpoint

__all__ = [
    "ARCHITECTURES",
    "ModelCard",
    "build_model",
    "count_parameters",
    "default_architecture",
    "load_checkpoint",
    "read_card",
    "save_checkpoint",
]
