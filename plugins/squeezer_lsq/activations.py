"""LSQ activation quantization: fake-quantize the inputs of chosen modules.

The step is one learnable scalar per quantized input, initialized from the first batch seen to
``2 * mean(|x|) / sqrt(Qp)``; its gradient is scaled by ``1 / sqrt(N_features * Qp)`` with
``N_features`` the number of elements of one sample (Esser et al., 2020, section 2.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from squeezer_lsq.modules import FALLBACK_STEP, MIN_STEP, GridFakeQuantizer, fake_quantize, lsq_step

#: name under which the quantizer is registered as a child of the module whose input it quantizes
CHILD_NAME = "input_quantizer"


class LsqActivationQuantizer(GridFakeQuantizer):
    """LSQ fake quantizer for activations (unsigned by default: e.g. ReLU outputs).

    ``step`` (a scalar parameter) is initialized from the first batch this module sees; the
    ``initialized`` buffer records that in the state_dict, so a loaded step is not overwritten.
    """

    initialized: torch.Tensor
    step: nn.Parameter
    hook_handle: RemovableHandle | None

    def __init__(self, *, bits: int = 8, signed: bool = False) -> None:
        super().__init__(bits=bits, signed=signed, per_channel=False)
        self.step = nn.Parameter(torch.tensor(FALLBACK_STEP))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False
        self.hook_handle = None  # set by attach_activation_quantizers

    def _after_load(self) -> None:
        self._initialized = bool(self.initialized)

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        a = x.detach().float().abs()
        a = a[torch.isfinite(a)]
        mean = float(a.mean()) if a.numel() else 0.0
        value = 2 * mean / math.sqrt(self.qp) if mean > 0 else FALLBACK_STEP
        self.step.fill_(max(value, MIN_STEP))
        self.initialized.fill_(True)
        self._initialized = True

    def scale(self, v: torch.Tensor) -> torch.Tensor:
        if not self._initialized:
            self._initialize(v)
        features = v[0].numel() if v.dim() > 1 else v.numel()
        return lsq_step(self.step, 1.0 / math.sqrt(max(features, 1) * self.qp), v.dtype)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return fake_quantize(v, self.scale(v), self.qn, self.qp)


def _quantize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return None
    quantizer = getattr(module, CHILD_NAME)
    return (quantizer(args[0]), *args[1:])


def attach_activation_quantizers(
    model: nn.Module, module_names: Iterable[str], bits: int = 8, signed: bool = False
) -> dict[str, LsqActivationQuantizer]:
    """Fake-quantize the first (tensor) input of each named module of ``model`` with LSQ.

    Each quantizer becomes the child ``input_quantizer`` of its module (so its step is in
    ``model.parameters()`` and the state_dict) and runs in a forward pre-hook. Create the
    optimizer after attaching. Returns the quantizers by module name.
    """
    quantizers: dict[str, LsqActivationQuantizer] = {}
    names = list(dict.fromkeys(module_names))
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"module_names: no module {name!r} in the model") from None
        if hasattr(module, CHILD_NAME):
            raise ValueError(f"module_names: {name!r} already has an {CHILD_NAME}")
    for name in names:
        module = model.get_submodule(name)
        quantizer = LsqActivationQuantizer(bits=bits, signed=signed)
        module.add_module(CHILD_NAME, quantizer)
        quantizer.hook_handle = module.register_forward_pre_hook(_quantize_input)
        quantizers[name] = quantizer
    return quantizers


def remove_activation_quantizers(model: nn.Module) -> list[str]:
    """Undo :func:`attach_activation_quantizers`; returns the names of the modules cleaned."""
    removed = []
    for name, module in list(model.named_modules()):
        quantizer = module._modules.get(CHILD_NAME)
        if isinstance(quantizer, LsqActivationQuantizer):
            handle = getattr(quantizer, "hook_handle", None)
            if handle is not None:
                handle.remove()
            del module._modules[CHILD_NAME]
            removed.append(name)
    return removed
