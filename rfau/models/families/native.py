"""Family ``rfau``: the architectures rfau builds and trains itself (``rfau.models.arch``)."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from rfau.errors import ModelError
from rfau.models.arch import architecture_name, build_model
from rfau.models.families.base import Family, ModelCard, ModuleDefaults

# adapters on the last block and the head, taps at the last block's output, the pooled
# features and the logits
NATIVE_DEFAULTS: dict[str, ModuleDefaults] = {
    "small_cnn": ModuleDefaults(targets=("conv3", "fc1", "fc"), taps=("flatten", "fc")),
    "resnet18": ModuleDefaults(
        targets=("layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2", "fc"),
        taps=("layer4", "flatten", "fc"),
    ),
}


class NativeFamily(Family):
    name = "rfau"
    summary = "rfau's own architectures (small_cnn, resnet18), trained by `rfau train`"

    def build(self, card: ModelCard) -> nn.Module:
        return build_model(card.architecture, card.input_shape[0], len(card.classes), **card.arch_kwargs)

    def load_weights(self, model: nn.Module, path: Path) -> None:
        try:
            model.load_state_dict(load_file(str(path)), strict=True)
        except (SafetensorError, RuntimeError) as e:
            raise ModelError(f"{path}: cannot load into {architecture_name(model)}: {str(e)[:300]}") from None

    def save_weights(self, model: nn.Module, path: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))

    def owns(self, model: nn.Module) -> bool:
        return architecture_name(model) is not None

    def default_modules(self, model: nn.Module) -> ModuleDefaults | None:
        return NATIVE_DEFAULTS.get(architecture_name(model) or "")
