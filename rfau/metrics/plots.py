"""Plots of the evidence (matplotlib, files only)."""

from __future__ import annotations

from pathlib import Path

import torch

from rfau.data.base import Dataset
from rfau.data.split import Split
from rfau.models.checkpoint import load_checkpoint_for
from rfau.train import predict_logits


def confidence_histogram(ds: Dataset, split: Split, models: dict[str, Path], path: Path) -> Path:
    """True-label confidence of forget vs test samples, one panel per model: what the
    confidence-based membership attack sees."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3), sharey=True, squeeze=False)
    for ax, (name, mdir) in zip(axes[0], models.items()):
        model, _, ds = load_checkpoint_for(mdir, ds)  # model families: a text model's tokens
        for part, color in (("forget", "tab:red"), ("test", "tab:blue")):
            idx = ds.indices(getattr(split, part))
            p = predict_logits(model, ds.x[idx]).softmax(1)[torch.arange(len(idx)), ds.y[idx]]
            ax.hist(p.numpy(), bins=20, range=(0, 1), alpha=0.6, color=color, label=part, density=True)
        ax.set_title(name)
        ax.set_xlabel("true-label confidence")
    axes[0][0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
