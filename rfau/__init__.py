"""rfau: audited, retraining-free data deletion for PyTorch models (RFAU with LoRA)."""

__version__ = "0.1.0"
