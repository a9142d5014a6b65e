"""Activation quantization: LSQ fake quantizers on the inputs of the compressed layers.

Each quantized input gets an :class:`LsqActivationQuantizer`, the child ``input_quantizer`` of
the module it feeds (so its step is in ``model.parameters()`` and the state dict), run by a
forward pre-hook on the module's first tensor argument. LSQ (Esser et al., ICLR 2020): one
learned step ``s`` per tensor, ``x_q = round(clip(x / s, -Qn, Qp)) * s`` with a straight-through
``round``, the step's gradient scaled by ``1 / sqrt(N * Qp)`` (``N`` the elements of one sample),
``s`` initialized to ``2 * mean(|x|) / sqrt(Qp)``. With ``log_step`` the learned parameter is
``log s`` (as the weight quantizer's ``log_step``): Adam moves a parameter by about its learning rate
per update, which on an 8-bit activation step (0.01-0.1) is 10-100 % of it and can push it below
zero (a dead layer, measured on the KWS suite model); on ``log s`` every update is relative.

:func:`attach_activations` is what every driver calls with a recipe's ``activations`` table: it
chooses the modules (the compressed layers, per-layer overrides first match wins), calibrates on
a few batches (the step from ``mean(|x|)``; the grid unsigned when every input seen is
non-negative, e.g. after a ReLU, signed otherwise), then attaches the quantizers initialized. Call
it before the optimizer is built, so the steps are trained with the weights.

The ONNX export writes these quantizers as QuantizeLinear/DequantizeLinear; an artifact records
each one's module, bits, signedness and step (:mod:`squeezer.artifact.format`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from squeezer.compress.overrides import Layers
from squeezer.compress.weight import compressed_weights
from squeezer.errors import ConfigError
from squeezer.recipe.configs import Activations

#: name under which the quantizer is a child of the module whose input it quantizes
CHILD_NAME = "input_quantizer"
MIN_BITS, MAX_BITS = 2, 8
#: the smallest step used in forward; the step before any calibration
MIN_STEP, FALLBACK_STEP = 1e-8, 1.0


def grid_limits(bits: int, signed: bool) -> tuple[int, int]:
    """``(Qn, Qp)`` of the grid ``[-Qn, Qp]``: signed ``2**(b-1), 2**(b-1) - 1``; unsigned ``0, 2**b - 1``."""
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def fake_quantize(v: torch.Tensor, s: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
    """``round(clip(v / s, -qn, qp)) * s``, ``round`` straight-through (LSQ's gradients)."""
    x = torch.clamp(v / s, -qn, qp)
    return (x.round().detach() + (x - x.detach())) * s


class LsqActivationQuantizer(nn.Module):
    """LSQ fake quantizer of one activation tensor (per tensor; unsigned by default).

    The learned scalar is ``step``, or ``log_step`` (``log s``) when built with ``log_step=True``;
    :meth:`current_step` is ``s`` either way. The ``initialized`` buffer records in the state dict that it
    was calibrated (or initialized from the first batch seen), so a loaded step is kept. The grid
    (``n_bits``, ``q_neg``, ``q_pos`` buffers) is in the state dict too, so a checkpoint can be
    rebuilt from its state alone (:func:`restore_from_state`). ``enabled = False`` passes inputs
    through (a full-precision teacher's forward).
    """

    initialized: torch.Tensor
    n_bits: torch.Tensor
    q_neg: torch.Tensor
    q_pos: torch.Tensor
    step: nn.Parameter | None
    log_step: nn.Parameter | None
    per_channel = False

    def __init__(self, *, bits: int = 8, signed: bool = False, step: float | None = None,
                 log_step: bool = False) -> None:
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
        self.bits = bits
        self.qn, self.qp = grid_limits(bits, bool(signed))
        self.register_buffer("n_bits", torch.tensor(bits, dtype=torch.int64))
        self.register_buffer("q_neg", torch.tensor(self.qn, dtype=torch.int64))
        self.register_buffer("q_pos", torch.tensor(self.qp, dtype=torch.int64))
        value = torch.tensor(FALLBACK_STEP if step is None else max(float(step), MIN_STEP))
        self.step = None if log_step else nn.Parameter(value)
        self.log_step = nn.Parameter(value.log()) if log_step else None
        self.register_buffer("initialized", torch.tensor(step is not None))
        self._initialized = step is not None
        self.enabled = True
        self.hook_handle: RemovableHandle | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync())

    @property
    def signed(self) -> bool:
        return self.qn > 0

    def _sync(self) -> None:
        bits, qn, qp = int(self.n_bits), int(self.q_neg), int(self.q_pos)
        if not MIN_BITS <= bits <= MAX_BITS or (qn, qp) not in (grid_limits(bits, True), grid_limits(bits, False)):
            raise ValueError(f"inconsistent activation quantizer grid bits={bits}, qn={qn}, qp={qp}")
        self.bits, self.qn, self.qp = bits, qn, qp
        self._initialized = bool(self.initialized)

    @torch.no_grad()
    def initialize(self, mean_abs: float) -> None:
        """Set the step to LSQ's ``2 * mean(|x|) / sqrt(Qp)`` (an all-zero input: the fallback)."""
        value = max(2 * mean_abs / math.sqrt(self.qp) if mean_abs > 0 else FALLBACK_STEP, MIN_STEP)
        if self.log_step is not None:
            self.log_step.fill_(math.log(value))
        else:
            assert self.step is not None
            self.step.fill_(value)
        self.initialized.fill_(True)
        self._initialized = True

    def current_step(self) -> torch.Tensor:
        """The step ``s`` (``exp(log_step)`` in log mode), with its gradient path to the learned parameter."""
        if self.log_step is not None:
            return self.log_step.exp()
        assert self.step is not None
        return self.step

    def scale(self, v: torch.Tensor) -> torch.Tensor:
        """The step applied to ``v``: ``max(step, MIN_STEP)``, its gradient scaled by ``1 / sqrt(N * Qp)``."""
        if not self._initialized:
            a = v.detach().float().abs()
            a = a[torch.isfinite(a)]
            self.initialize(float(a.mean()) if a.numel() else 0.0)
        features = v[0].numel() if v.dim() > 1 else v.numel()
        grad_scale = 1.0 / math.sqrt(max(features, 1) * self.qp)
        step = self.current_step()
        step = step if step.dtype == v.dtype else step.to(v.dtype)
        scaled = step * grad_scale
        return step.detach().clamp_min(max(MIN_STEP, torch.finfo(v.dtype).tiny)) + (scaled - scaled.detach())

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return v
        return fake_quantize(v, self.scale(v), self.qn, self.qp)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}" + (", log_step=True" if self.log_step is not None else "")


def _quantize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return None
    quantizer = getattr(module, CHILD_NAME)
    return (quantizer(args[0]), *args[1:])


def _module(model: nn.Module, name: str, where: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{where}: no module {name!r} in the model") from None


def _add(module: nn.Module, quantizer: LsqActivationQuantizer) -> LsqActivationQuantizer:
    ref = next(module.parameters(), None)
    if ref is not None:
        quantizer.to(ref.device)
    module.add_module(CHILD_NAME, quantizer)
    quantizer.hook_handle = module.register_forward_pre_hook(_quantize_input)
    return quantizer


def attach_activation_quantizers(
    model: nn.Module, module_names: Iterable[str], bits: int = 8, signed: bool = False
) -> dict[str, LsqActivationQuantizer]:
    """Fake-quantize the first (tensor) input of each named module with LSQ, uncalibrated (the
    step is initialized from the first batch seen). Returns the quantizers by module name."""
    names = list(dict.fromkeys(module_names))
    for name in names:
        if hasattr(_module(model, name, "module_names"), CHILD_NAME):
            raise ValueError(f"module_names: {name!r} already has an {CHILD_NAME}")
    return {name: _add(model.get_submodule(name), LsqActivationQuantizer(bits=bits, signed=signed))
            for name in names}


def remove_activation_quantizers(model: nn.Module) -> list[str]:
    """Undo the attach functions; returns the names of the modules cleaned."""
    removed = []
    for name, module in list(model.named_modules()):
        quantizer = module._modules.get(CHILD_NAME)
        if isinstance(quantizer, LsqActivationQuantizer):
            if quantizer.hook_handle is not None:
                quantizer.hook_handle.remove()
            del module._modules[CHILD_NAME]
            removed.append(name)
    return removed


def activation_quantizers(model: nn.Module) -> dict[str, LsqActivationQuantizer]:
    """Every activation quantizer of ``model`` by the name of the module whose input it quantizes."""
    return {name: q for name, m in model.named_modules()
            if isinstance(q := m._modules.get(CHILD_NAME), LsqActivationQuantizer)}


def choose_activations(model: nn.Module, choice: Activations, where: str) -> dict[str, tuple[int, bool | None]]:
    """``module name -> (bits, signed)`` of the compressed layers whose inputs ``choice`` quantizes
    (``signed`` ``None``: decided by calibration). Overrides match module names (globs or selectors,
    :mod:`squeezer.compress.overrides`); the first match wins; a glob that names no layer is refused."""
    modules = list(dict.fromkeys(path.rpartition(".")[0] for path, _ in compressed_weights(model)))
    if not modules:
        raise ConfigError(f"{where}: the model has no compressed layers whose inputs could be quantized")
    layers = Layers.of(model, modules, owner=False)
    patterns = [o.pattern for o in choice.overrides]
    layers.check_used(patterns, where)
    out: dict[str, tuple[int, bool | None]] = {}
    for name in modules:
        j = layers.first_match(patterns, name)
        override = choice.overrides[j] if j is not None else None
        if override is None:
            out[name] = (choice.bits, None)
        elif not override.skip:
            out[name] = (override.bits if override.bits is not None else choice.bits, override.signed)
    return out


@torch.no_grad()
def calibrate(model: nn.Module, names: Iterable[str],
              run: Callable[[], Iterable[Any]]) -> dict[str, tuple[float, float]]:
    """``module name -> (mean |x|, min x)`` of each named module's first tensor input over the
    forwards ``run()`` performs (iterating it runs one batch per item), with the model in eval mode."""
    sums: dict[str, list[float]] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                x = args[0].detach().float()
                x = x[torch.isfinite(x)]
                acc = sums.setdefault(name, [0.0, 0.0, math.inf])
                acc[0] += float(x.abs().sum())
                acc[1] += x.numel()
                acc[2] = min(acc[2], float(x.min())) if x.numel() else acc[2]
        return record

    for name in names:
        handles.append(model.get_submodule(name).register_forward_pre_hook(hook(name)))
    training = model.training
    model.eval()
    try:
        for _ in run():
            pass
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return {name: (s / n if n else 0.0, lo if n else 0.0) for name, (s, n, lo) in sums.items()}


def attach_activations(model: nn.Module, choice: Activations, run: Callable[[int], Iterable[Any]],
                       where: str) -> dict[str, tuple[int, bool]]:
    """Quantize the inputs of the compressed layers as ``choice`` says, calibrated: ``run(n)``
    iterates over (at most) ``n`` forwards of the model on training batches. Returns
    ``module name -> (bits, signed)`` of the quantizers attached."""
    plan = choose_activations(model, choice, where)
    for name in plan:
        if hasattr(model.get_submodule(name), CHILD_NAME):
            raise ConfigError(f"{where}: {name!r} already has an {CHILD_NAME} (quantize activations once)")
    stats = calibrate(model, plan, lambda: run(choice.calibration_batches))
    unseen = [name for name in plan if name not in stats]
    if unseen:
        raise ConfigError(f"{where}: layer {unseen[0]!r} received no floating tensor input during calibration")
    out: dict[str, tuple[int, bool]] = {}
    for name, (bits, signed) in plan.items():
        mean_abs, lo = stats[name]
        signed = lo < 0 if signed is None else signed
        quantizer = LsqActivationQuantizer(bits=bits, signed=signed, log_step=choice.log_step)
        quantizer.initialize(mean_abs)
        _add(model.get_submodule(name), quantizer)
        out[name] = (bits, signed)
    return out


def restore_activations(model: nn.Module, entries: Mapping[str, tuple[int, bool]],
                        dtype: torch.dtype | None = None, log_step: Iterable[str] = ()) -> None:
    """Recreate (calibrated, step to be loaded) quantizers ``module name -> (bits, signed)`` on a
    fresh model; those named in ``log_step`` learn ``log s`` (a checkpoint's, to resume training)."""
    in_log = set(log_step)
    for name, (bits, signed) in entries.items():
        module = _module(model, name, "activation quantizer")
        if hasattr(module, CHILD_NAME):
            raise ValueError(f"activation quantizer: {name!r} already has an {CHILD_NAME}")
        quantizer = LsqActivationQuantizer(bits=bits, signed=signed, step=FALLBACK_STEP, log_step=name in in_log)
        _add(module, quantizer.to(dtype) if dtype is not None else quantizer)


def restore_from_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Recreate on ``model`` the activation quantizers a state dict (a checkpoint's) holds, from
    their ``n_bits`` and ``q_neg`` entries (and ``log_step`` where it learns ``log s``), before it
    is loaded; returns the module names."""
    suffix = f"{CHILD_NAME}.n_bits"
    entries, in_log = {}, []
    for key, value in state.items():
        if key == suffix or key.endswith("." + suffix):
            name = key[: -len(suffix)].rstrip(".")
            prefix = f"{name}.{CHILD_NAME}." if name else f"{CHILD_NAME}."
            entries[name] = (int(value), int(state[prefix + "q_neg"]) > 0)
            if prefix + "log_step" in state:
                in_log.append(name)
    restore_activations(model, entries, log_step=in_log)
    return list(entries)
