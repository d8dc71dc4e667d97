"""Reference points every table needs: ``original`` (do nothing) and ``retrain`` (gold standard)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from rfau.config import TrainConfig
from rfau.methods.runner import UnlearnMethod
from rfau.models.families.backbone import backbone_of, finetune, retrain_start
from rfau.train import train_model


class Original(UnlearnMethod):
    name = "original"
    summary = "do nothing: the original model"

    def working_copy(self, model: nn.Module) -> nn.Module:
        return model  # never changed, so never copied: the result serves the caller's model

    def unlearn(self, work: nn.Module) -> None:
        pass

    def trainable_params(self, work: nn.Module) -> int:
        return 0


class Retrain(UnlearnMethod):
    """Train a fresh copy of the architecture on the retain set with the original's recipe; a
    model fine-tuned from a pre-trained backbone starts from that backbone again (a fresh head)
    and gets the same fine-tune (rfau.models.families.backbone)."""

    name = "retrain"
    summary = "retrain from scratch on the retain set"
    config = TrainConfig
    cfg: TrainConfig

    def working_copy(self, model: nn.Module) -> nn.Module:
        from_backbone = retrain_start(model, self.cfg.seed)
        if from_backbone is not None:
            return from_backbone
        fresh = copy.deepcopy(model)
        torch.manual_seed(self.cfg.seed)  # the fresh initialisation is part of the seeded recipe
        for m in fresh.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
        for p in fresh.parameters():
            p.requires_grad_(True)
        return fresh

    def unlearn(self, work: nn.Module) -> None:
        backbone = backbone_of(work)
        if backbone is not None:
            layers = int(backbone["trainable_layers"])
            finetune(work, self.data.x_retain, self.data.y_retain, self.cfg, layers, desc=self.desc)
            return
        train_model(work, self.data.x_retain, self.data.y_retain, self.cfg, desc=self.desc)
