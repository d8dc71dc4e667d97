"""rfau: audited, retraining-free data deletion for PyTorch models (RFAU with LoRA)."""

import atexit
import gc

__version__ = "0.1.0"

# At interpreter exit, CPython's cyclic garbage collector walks every object still alive: with
# torch, peft and mlflow loaded that is about 2 s per process (every pipeline task and CLI command),
# spent freeing memory the OS takes back anyway. gc.freeze() puts those objects out of its reach;
# atexit handlers, flushes and reference-counted clean-up still run as before.
atexit.register(gc.freeze)
