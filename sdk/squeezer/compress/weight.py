"""The parametrization through which every compressed weight is seen.

A targeted parameter ``W`` is kept as ``parametrizations.<name>.original`` and the module sees
one of three *views* of it (``M`` the boolean mask, ``Q`` the optional fake quantizer):

- ``student``: ``Q(W ⊙ M)``, the pruned, quantized, deployable net. Gradient reaches only kept
  ("important") entries: pruned entries are exactly zero in forward and in gradient.
- ``teacher``: ``Q(W ⊙ M)`` on important entries (no gradient) and ``W`` on pruned
  ("unimportant") entries (with gradient): the PQK teacher shares the student's storage.
- ``teacher_fp``: as ``teacher`` but the important entries in full precision (no gradient).

Masking selects rather than multiplies (``torch.where`` semantics, computed by a bitwise AND in
:mod:`squeezer.compress.bitmask`), so pruned entries are exactly 0 even where ``W`` holds Inf,
and their gradient exactly 0 even where upstream gradients are NaN.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from squeezer.compress.bitmask import blend, masked

View = Literal["student", "teacher", "teacher_fp"]
VIEWS: tuple[View, ...] = ("student", "teacher", "teacher_fp")


class CompressedWeight(nn.Module):
    """Parametrization ``W -> view(W)`` holding the mask buffer and the fake quantizer.

    A quantizer may be *pending*: created when the weight was attached, so that its parameters
    exist before any optimizer does, and switched on by the first pruning round, which
    initializes it in place from the pruned weight. A pending quantizer leaves the weight as it
    is (:attr:`quantizer` is ``None``); its parameters still enter the forward with a zero
    coefficient, so DDP sees every parameter used and its gradients are exactly zero.
    """

    mask: torch.Tensor

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))
        # registered under one name whether pending or on, so a state_dict loads either way
        self._modules["quantizer"] = None
        self.quantizer_on = True
        # registry name and options of the quantizer, so a fresh model can be rebuilt (see spec())
        self.quantizer_spec: dict[str, Any] | None = None
        self.quantizer_config: Any = None  # the registry's config object that built it
        self.view: View = "student"

    @property
    def quantizer(self) -> nn.Module | None:
        """The fake quantizer applied in forward, or ``None`` (none, or one still pending)."""
        module = self._modules["quantizer"]
        return module if self.quantizer_on else None

    @property
    def fake_quantizer(self) -> nn.Module | None:
        """The quantizer module whether pending or on."""
        return self._modules["quantizer"]

    def set_quantizer(self, module: nn.Module, spec: dict[str, Any], config: Any, *, on: bool = True) -> None:
        """Install ``module``, built by the registry's ``config`` and described by ``spec`` (see
        :func:`squeezer.compress.spec`); ``on=False`` leaves it pending."""
        self._modules["quantizer"] = module
        self.quantizer_spec, self.quantizer_config, self.quantizer_on = spec, config, on

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        kept = masked(self.mask, weight)
        module = self._modules["quantizer"]
        if module is None:
            student = kept
        elif self.quantizer_on:
            student = module(kept)
        else:
            student = kept + _zero_touch(module)
        if self.view == "student":
            return student
        important = student if self.view == "teacher" else weight
        return blend(self.mask, important, weight)

    def extra_repr(self) -> str:
        density = self.mask.float().mean().item() if self.mask.numel() else 1.0
        return f"density={density:.4f}, view={self.view}"


def _zero_touch(module: nn.Module) -> torch.Tensor | float:
    """``0 * sum(parameters)``: exactly 0, with a (zero) gradient for every parameter."""
    total: torch.Tensor | float = 0.0
    for p in module.parameters():
        total = total + p.sum() * 0.0
    return total


def compressed_weights(model: nn.Module) -> Iterator[tuple[str, CompressedWeight]]:
    """Yield ``(parameter path, parametrization)`` for every compressed weight of ``model``, once.

    A tied weight (one tensor used by several modules, such as a language model's token
    embedding and output head, or a layer used twice) has one parametrization at each of its
    paths; it is yielded once, under the path met first (see :func:`weight_aliases` for the others).
    """
    for path, p, first in _registrations(model):
        if first:
            yield path, p


def weight_aliases(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """``path -> its other paths`` for every tied compressed weight (the path is the one
    :func:`compressed_weights` yields)."""
    paths: dict[int, list[str]] = {}
    for path, p, _ in _registrations(model):
        paths.setdefault(id(p), []).append(path)
    return {group[0]: tuple(group[1:]) for group in paths.values() if len(group) > 1}


def _registrations(model: nn.Module) -> Iterator[tuple[str, CompressedWeight, bool]]:
    """``(path, parametrization, first time seen)`` for every registration of a compressed weight,
    and for every name of a module registered under several (a layer used twice)."""
    seen: set[int] = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        parametrizations = getattr(module, "parametrizations", None)
        if parametrizations is None:
            continue
        for param_name, plist in parametrizations.items():
            for p in plist:
                if isinstance(p, CompressedWeight):
                    path = f"{module_name}.{param_name}" if module_name else param_name
                    yield path, p, id(p) not in seen
                    seen.add(id(p))


@contextmanager
def view(model: nn.Module, which: View) -> Iterator[None]:
    """Within the block, every compressed weight of ``model`` is seen through view ``which``."""
    if which not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {which!r}")
    params = [p for _, p in compressed_weights(model)]
    previous = [p.view for p in params]
    for p in params:
        p.view = which
    try:
        yield
    finally:
        for p, v in zip(params, previous, strict=True):
            p.view = v
