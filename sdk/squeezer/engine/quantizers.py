"""Choosing each compressed weight's quantizer (per-layer overrides) and attaching it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from squeezer import compress
from squeezer.compress.overrides import Layers
from squeezer.compress.weight import compressed_weights
from squeezer.engine.activations import CHILD_NAME as ACTIVATION_CHILD
from squeezer.recipe.configs import QuantizerChoice
from squeezer.registry import Registry


def quantizer_chooser(model: nn.Module, registry: Registry, choice: QuantizerChoice,
                      where: str) -> Callable[[str], tuple[str, Any] | None]:
    """``path -> (name, config)`` honouring per-layer overrides (first match wins; globs or selectors,
    :mod:`squeezer.compress.overrides`); refuses a glob that names no compressed weight."""
    layers = Layers.of(model, [path for path, _ in compressed_weights(model)], owner=True)
    patterns = [o.pattern for o in choice.overrides]
    layers.check_used(patterns, where)
    base = registry.create("quantizer", choice.name, choice.options, where=where)

    def choose(path: str) -> tuple[str, Any] | None:
        j = layers.first_match(patterns, path)
        if j is None:
            return choice.name, base
        override = choice.overrides[j]
        if override.skip:
            return None
        options = {**choice.options, **override.options}
        return choice.name, registry.create("quantizer", choice.name, options, where=f"{where}.overrides[{j}]")

    return choose


def attach_pending_quantizers(model: nn.Module, registry: Registry, choice: QuantizerChoice,
                              where: str, *, on: bool = True) -> dict[str, int]:
    """Attach quantizers to the compressed weights that have none yet (``on=False``: pending,
    switched on by the first pruning round); returns bits per newly quantized weight."""
    if all(p.fake_quantizer is not None for _, p in compressed_weights(model)):
        return {}
    choose = quantizer_chooser(model, registry, choice, where)
    pending = {path for path, p in compressed_weights(model) if p.fake_quantizer is None}
    return compress.attach_quantizers(model, lambda path: choose(path) if path in pending else None, on=on)


def quantizer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of every quantizer of ``model``: the weights', pending or on, and
    the activation quantizers' (their steps learn like the weights' steps: no decay, the lr scale)."""
    weights = [q for _, p in compressed_weights(model) if p.fake_quantizer is not None
               for q in p.fake_quantizer.parameters() if q.requires_grad]
    inputs = [q for name, m in model.named_modules() if name.rpartition(".")[2] == ACTIVATION_CHILD
              for q in m.parameters() if q.requires_grad]
    return weights + inputs
