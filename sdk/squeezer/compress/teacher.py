"""PQK's self-teacher: the student's own storage plus its pruned-away ("unimportant") weights.

No copy of the compressed weights is made: the teacher reads the same ``original`` tensors through
the ``teacher`` view (see :mod:`squeezer.compress.weight`). Ownership during Phase 2:

- compressed weights: the student owns the kept (important) entries and its quantizer step sizes;
  the teacher owns the pruned (unimportant) entries. The views route gradients accordingly.
- parameters outside the masks: the teacher gets private copies of the groups in ``owns``
  (``"norm"``: normalization layers with their running statistics, since the teacher's
  activations differ from the student's; ``"bias"``: the biases of compressed layers); the student
  owns everything else, which the teacher uses without sending it gradients.
- activation quantizers: the student's. ``quantized`` (the mutual stage's ``teacher_quantized``)
  decides both whether the teacher's important weights are quantized and whether its layers'
  inputs pass through the student's activation quantizers (with the student's steps, which the
  teacher reads without training them); ``False`` gives a full-precision teacher.

Running statistics the teacher shares (``owns`` without ``"norm"``) stay the student's: the
teacher's train-mode forward normalizes with its batch statistics but updates a throw-away copy
of the student's running statistics, never the student's (the deployable model's) own. Otherwise
the teacher's activations, which differ from the student's, would overwrite them: the student fell
to chance (10 %) on the digits example. In eval mode a sharing teacher normalizes with the
student's statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from squeezer.compress.weight import compressed_weights, view

_NORM_BASES = {"_NormBase", "LayerNorm", "GroupNorm", "RMSNorm", "LocalResponseNorm"}


def _is_norm(module: nn.Module) -> bool:
    return any(cls.__name__ in _NORM_BASES for cls in type(module).__mro__)


def teacher_private_names(model: nn.Module, owns: Iterable[str]) -> list[str]:
    """State names (parameters and buffers) the teacher keeps its own copy of."""
    owns = set(owns)
    names: list[str] = []
    compressed_modules = {path.rpartition(".")[0] for path, _ in compressed_weights(model)}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if "norm" in owns and _is_norm(module):
            names += [prefix + n for n, _ in module.named_parameters(recurse=False)]
            names += [prefix + n for n, b in module.named_buffers(recurse=False) if b is not None]
        if "bias" in owns and module_name in compressed_modules and getattr(module, "bias", None) is not None:
            names.append(prefix + "bias")
    return names


class SelfTeacher(nn.Module):
    """The PQK teacher of ``model``; call it like a model. Holds only the teacher-private state."""

    def __init__(self, model: nn.Module, owns: Iterable[str] = ("norm",), quantized: bool = True) -> None:
        super().__init__()
        self._model = [model]  # a list, so the student is not registered as a submodule
        self.quantized = quantized
        self.private = teacher_private_names(model, owns)
        self.shared_stats = _running_stats(model, exclude=self.private)
        state = dict(model.named_parameters()) | dict(model.named_buffers())
        self.params = nn.ParameterDict()
        self.buffers_ = nn.Module()
        for name in self.private:
            tensor = state[name]
            key = _key(name)
            if isinstance(tensor, nn.Parameter):
                self.params[key] = nn.Parameter(tensor.detach().clone(), requires_grad=tensor.requires_grad)
            else:
                self.buffers_.register_buffer(key, tensor.detach().clone())

    @property
    def student(self) -> nn.Module:
        return self._model[0]

    def overrides(self) -> dict[str, torch.Tensor]:
        """What the teacher's forward replaces: its private state, and the student's other
        parameters detached (the teacher reads them but does not train them)."""
        out: dict[str, torch.Tensor] = {}
        for name in self.private:
            key = _key(name)
            out[name] = self.params[key] if key in self.params else getattr(self.buffers_, key)
        for name, p in self.student.named_parameters():
            if name not in out and not name.endswith("original"):
                out[name] = p.detach()
        if self.training:  # batch-norm updates these in place: hand it copies, keep the student's
            buffers = dict(self.student.named_buffers())
            out.update({name: buffers[name].clone() for name in self.shared_stats})
        return out

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        model = self.student
        model.train(self.training)
        with view(model, "teacher" if self.quantized else "teacher_fp"), _activations(model, self.quantized):
            return functional_call(model, self.overrides(), args, kwargs, strict=False)

    def train(self, mode: bool = True) -> SelfTeacher:
        super().train(mode)
        return self


@contextmanager
def _activations(model: nn.Module, on: bool) -> Iterator[None]:
    """The student's activation quantizers (children ``input_quantizer`` with an ``enabled`` switch,
    :mod:`squeezer.engine.activations`) as the teacher sees them: as they are when ``on``, else off.
    A quantized teacher uses the student's steps (read, not trained, like its other parameters)."""
    quantizers: list[Any] = [q for m in model.modules()
                             if hasattr(q := m._modules.get("input_quantizer"), "enabled")]
    saved = [q.enabled for q in quantizers]
    if not on:
        for q in quantizers:
            q.enabled = False
    try:
        yield
    finally:
        for q, enabled in zip(quantizers, saved, strict=True):
            q.enabled = enabled


def _running_stats(model: nn.Module, exclude: Iterable[str]) -> list[str]:
    """The buffers of normalization layers (running mean/var, batch count) not in ``exclude``."""
    excluded = set(exclude)
    names: list[str] = []
    for module_name, module in model.named_modules():
        if _is_norm(module):
            prefix = f"{module_name}." if module_name else ""
            names += [prefix + n for n, b in module.named_buffers(recurse=False)
                      if b is not None and prefix + n not in excluded]
    return names


def _key(name: str) -> str:
    return name.replace(".", "__")
