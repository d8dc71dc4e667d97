"""The model a serving team loads: MLflow's standard PyTorch flavor in the ``pt2`` format
(torch.export: a traced graph, no pickle, no rfau code), so ``models:/NAME@champion`` loads with
mlflow and torch alone. Input: float32 images (N, C, H, W) in [0, 1]; output: class
probabilities (N, classes). The safetensors weights and the model card travel beside it as extra
files: they are the audit's evidence (their sha256 is checked on every fetch)."""

from __future__ import annotations

import warnings
from pathlib import Path

from rfau.models.checkpoint import CARD, WEIGHTS, load_checkpoint
from rfau.models.families import get_family

EXAMPLE_BATCH = 2  # torch.export keeps a batch dimension of 1 static; 2 makes it dynamic


def log_served_model(model_dir: Path):
    """Log the folder's model (weights + card) as ``model`` in the active run -> ModelInfo."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    model, card = load_checkpoint(model_dir)  # verifies the weights against the card
    served = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
    example = get_family(card.family).serving_example(card, EXAMPLE_BATCH)  # images, or token ids
    with torch.no_grad():
        probs = served(torch.from_numpy(example)).numpy()
    with warnings.catch_warnings():  # torch.export's notes on the traced graph
        warnings.simplefilter("ignore")
        return mlflow.pytorch.log_model(
            served,
            name="model",
            serialization_format="pt2",
            signature=infer_signature(example, probs),
            input_example=example,
            extra_files=[str(Path(model_dir) / f) for f in (WEIGHTS, CARD)],
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"mlflow=={mlflow.__version__}",
                f"numpy=={np.__version__}",
            ],
        )
