"""The model a serving team loads: MLflow's standard PyTorch flavor in the ``pt2`` format
(torch.export: a traced graph, no pickle, no rfau code), so ``models:/NAME@champion`` loads with
mlflow and torch alone. Input: float32 images (N, C, H, W) in [0, 1] (a text model: int64 token
ids and mask); output: class probabilities (N, classes), in the order of the model metadata's
``rfau.classes``. The graph refuses input outside the documented range (e.g. pixels sent as
0-255) with an error naming the contract, instead of answering confidently wrong. The
safetensors weights and the model card travel beside it as extra files: they are the audit's
evidence (their sha256 is checked on every fetch)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rfau.models.checkpoint import CARD, SERVING_EXAMPLE, SERVING_EXAMPLE_ROWS, WEIGHTS, load_checkpoint
from rfau.models.families import get_family


def _guarded(model, contract: dict[str, Any]):
    """``model`` behind a check of the contract's value range, traced into the exported graph."""
    import torch

    lo, hi = contract["range"]
    message = (
        f"input outside the served model's range [{lo}, {hi}] ({contract['dtype']}, "
        f"{contract['layout']}; scaling: {contract['scaling']})"
    )

    class InputRange(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch._assert_async((x.min() >= lo) & (x.max() <= hi), message)
            return x

    return torch.nn.Sequential(InputRange(), model, torch.nn.Softmax(dim=1)).eval()


def serving_example(model_dir: Path, card) -> Any:
    """The model folder's real example inputs (written when it was trained or unlearned), else
    the family's synthetic ones of the right shape and range."""
    import numpy as np

    family = get_family(card.family)
    synthetic = family.serving_example(card, SERVING_EXAMPLE_ROWS)
    path = Path(model_dir) / SERVING_EXAMPLE
    if path.is_file():
        real = np.load(path, allow_pickle=False)
        if real.shape == synthetic.shape and real.dtype == synthetic.dtype:
            return real
    return synthetic


# the exported graph runs on CPU; PyPI's torch of the same version is the CUDA build (triton and
# the nvidia-* packages, several GB), so the requirements name the CPU build and PyTorch's CPU index
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def served_requirements() -> list[str]:
    """The serving environment's requirements.txt lines: CPU torch of this torch's version (from
    PyTorch's CPU index, or wherever the serving machine's pip finds it), mlflow and numpy."""
    import mlflow
    import numpy as np
    import torch

    return [
        f"--extra-index-url {TORCH_CPU_INDEX}",
        f"torch=={torch.__version__.split('+')[0]}+cpu",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
    ]


def log_served_model(model_dir: Path):
    """Log the folder's model (weights + card) as ``model`` in the active run -> ModelInfo."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    model, card = load_checkpoint(model_dir)  # verifies the weights against the card
    contract = get_family(card.family).serving_contract(card)
    served = _guarded(model, contract)
    example = serving_example(model_dir, card)
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
            metadata={"rfau": {"input": contract, "output": "class probabilities", "classes": card.classes}},
            extra_files=[str(Path(model_dir) / f) for f in (WEIGHTS, CARD)],
            pip_requirements=served_requirements(),
        )
