"""The component images (infra/docker). One definition runs everywhere: on a cluster each task
runs in the image named here; kfp.local runs the same function in the current environment."""

from __future__ import annotations

import os

import rfau

# override at compile time, e.g. RFAU_IMAGE=registry.example.com/rfau:0.1.0 rfau pipeline compile
CPU_IMAGE = os.environ.get("RFAU_IMAGE", f"ghcr.io/rfau/rfau:{rfau.__version__}")
CUDA_IMAGE = os.environ.get("RFAU_CUDA_IMAGE", f"ghcr.io/rfau/rfau:{rfau.__version__}-cuda")
