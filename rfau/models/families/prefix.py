"""Frozen-prefix caching: the part of a model before the first adapted or tapped module is run
once and its output cached; training then runs the model from there (``run_from``).

``cut`` 0 means no cache (the model's own inputs). Two kinds of models can be cut:

- rfau's ``Staged`` models: ``cut`` is the index of their first stage to run;
- Hugging Face transformers encoders (a ``TextClassifier`` of the hf-text family: BERT and its
  kin, whose embeddings feed a ``ModuleList`` of layers): ``cut`` k >= 1 means the embeddings and
  layers ``0 .. k-2`` are cached and layer ``k-1`` is the first to run. The cached tensor is the
  hidden state that layer receives, with the attention mask as one extra channel, [N, L, D + 1]
  (one tensor, so that batches of it are index slices as the images' are). The run from there
  goes through the model's own forward, the embeddings' output replaced by the cached hidden
  state and the layer list shortened to the layers still to run, so the attention masks, the
  pooler and the head are exactly the model's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rfau.models.arch import Staged


def prefix_cut(model: nn.Module, module_names: Sequence[str]) -> int:
    """How much of ``model`` is untouched by ``module_names`` (adapter targets and taps) and can be
    cached: 0 for nothing."""
    if isinstance(model, Staged):
        return model.first_stage(list(module_names))
    parts = encoder_parts(model)
    return parts.cut(module_names) if parts else 0


def run_to(model: nn.Module, x: torch.Tensor, cut: int) -> torch.Tensor:
    """What ``run_from`` takes at ``cut``: the prefix's output for the model's inputs ``x``."""
    if not cut:
        return x
    if isinstance(model, Staged):
        return model.run(x, 0, cut)
    parts = encoder_parts(model)
    assert parts is not None, "a cut > 0 comes from prefix_cut, which gives 0 for a model it cannot cut"
    return parts.run_to(model, x, cut)


def run_from(model: nn.Module, h: torch.Tensor, cut: int) -> torch.Tensor:
    """The model's logits for the prefix output ``h`` (from ``run_to``; the inputs when cut is 0)."""
    if not cut:
        return model(h)
    if isinstance(model, Staged):
        return model.run(h, cut)
    parts = encoder_parts(model)
    assert parts is not None, "a cut > 0 comes from prefix_cut, which gives 0 for a model it cannot cut"
    return parts.run_from(h, cut)


class _Reached(Exception):  # noqa: N818  (control flow, never seen outside run_to)
    """Stops a forward pass at the first layer to run, carrying that layer's input."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden


@dataclass
class EncoderParts:
    """The embeddings and the layer stack of a transformers encoder inside rfau's wrapper."""

    net: nn.Module  # the transformers model (``AutoModelForSequenceClassification``)
    embeddings_module: nn.Module
    embeddings: str  # module names, as in ``model.named_modules()``
    layers: str
    owner: nn.Module  # the module whose attribute holds the layer list
    attr: str

    def layer_list(self) -> nn.ModuleList:
        stack = getattr(self.owner, self.attr)
        assert isinstance(stack, nn.ModuleList)
        return stack

    def cut(self, module_names: Sequence[str]) -> int:
        """1 + the index of the first layer holding any of the modules (0: the embeddings hold
        one); modules after the stack (pooler, head) or around it (the encoder) leave the last
        layer to run, so that a cut always runs at least one layer."""
        n = len(self.layer_list())
        cut = n
        for name in module_names:
            if name == self.embeddings or name.startswith(self.embeddings + "."):
                return 0
            if name.startswith(self.layers + "."):
                cut = min(cut, int(name[len(self.layers) + 1 :].split(".")[0]) + 1)
        return cut

    def run_to(self, model: nn.Module, x: torch.Tensor, cut: int) -> torch.Tensor:
        def stop(_module, args, kwargs):
            raise _Reached(args[0] if args else kwargs["hidden_states"])

        handle = self.layer_list()[cut - 1].register_forward_pre_hook(stop, with_kwargs=True)
        try:
            model(x)
        except _Reached as reached:
            hidden = reached.hidden
        else:
            raise AssertionError("the forward pass never reached the layer to start from")
        finally:
            handle.remove()
        return torch.cat([hidden, x[:, 1].unsqueeze(-1).to(hidden.dtype)], -1)

    def run_from(self, h: torch.Tensor, cut: int) -> torch.Tensor:
        hidden, mask = h[..., :-1], h[..., -1].round().long()
        with self._from_layer(hidden, cut - 1):
            return self.net(inputs_embeds=hidden, attention_mask=mask).logits

    @contextlib.contextmanager
    def _from_layer(self, hidden: torch.Tensor, first: int) -> Iterator[None]:
        """The embeddings give ``hidden``; the stack holds the layers from ``first`` on."""
        handle = self.embeddings_module.register_forward_hook(lambda _m, _i, out: hidden.to(out.dtype))
        stack = self.layer_list()
        setattr(self.owner, self.attr, nn.ModuleList(list(stack)[first:]))
        try:
            yield
        finally:
            setattr(self.owner, self.attr, stack)
            handle.remove()


def encoder_parts(model: nn.Module) -> EncoderParts | None:
    """The embeddings and layer stack of an hf-text model, None for any other model (or an
    encoder laid out otherwise: one ``...embeddings`` module beside the longest ``ModuleList``)."""
    if getattr(model, "family", None) != "hf-text" or not hasattr(model, "net"):
        return None
    stacks = [(len(m), n) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not stacks:
        return None
    _, layers = max(stacks)
    embeddings = [
        n
        for n, _ in model.named_modules()
        if n.rsplit(".", 1)[-1] == "embeddings" and not n.startswith(layers + ".")
    ]
    if len(embeddings) != 1 or not layers.startswith("net."):
        return None
    owner_name, attr = layers.rsplit(".", 1)
    return EncoderParts(
        net=model.get_submodule("net"),
        embeddings_module=model.get_submodule(embeddings[0]),
        embeddings=embeddings[0],
        layers=layers,
        owner=model.get_submodule(owner_name),
        attr=attr,
    )


__all__ = ["encoder_parts", "prefix_cut", "run_from", "run_to"]
