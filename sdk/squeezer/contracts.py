"""The contracts of the extension points, written once.

Each function checks what one kind of strategy gave and raises :class:`ContractViolation` with
a message saying which rule was broken. The core calls them during a run and wraps the violation
in a :class:`~squeezer.errors.PluginError` naming the plugin; the conformance kit
(:mod:`squeezer.testing`) calls the same functions over hypothesis-drawn inputs. So a strategy
that passes the kit cannot break these rules in a user's run (the kit checks more besides:
determinism, gradients, the mask through the core).

Torch is imported only by the checks of tensors.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

#: the most rounds a schedule may have (a lazily endless ``sparsities()`` is cut there)
MAX_ROUNDS = 10_000


class ContractViolation(Exception):
    """A strategy broke its extension point's contract; the message names the rule."""


def _short(values: list[float], limit: int = 200) -> str:
    text = repr(values)
    return text if len(text) <= limit else text[: limit - 5] + " ...]"


def schedule(values: Iterable[Any], target: Any) -> list[float]:
    """A scheduler's ``sparsities()`` (read lazily, at most :data:`MAX_ROUNDS` + 1 values) and
    its ``target``: a non-empty list of real numbers in [0, 1], non-decreasing (pruned weights
    cannot revive), whose last value is the target. Returns the values as floats."""
    taken = list(itertools.islice(values, MAX_ROUNDS + 1))
    if not taken:
        raise ContractViolation("schedule is empty")
    if len(taken) > MAX_ROUNDS:
        raise ContractViolation(f"schedule has more than {MAX_ROUNDS:,} rounds")
    for i, v in enumerate(taken):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ContractViolation(f"round {i} sparsity {v!r} is not a finite number")
    floats = [float(v) for v in taken]
    if any(not 0.0 <= v <= 1.0 for v in floats):
        raise ContractViolation(f"schedule values must lie in [0, 1], got {_short(floats)}")
    if any(b < a for a, b in itertools.pairwise(floats)):
        raise ContractViolation(f"schedule decreases sparsity ({_short(floats)}); pruned weights cannot revive")
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0.0 <= target <= 1.0:
        raise ContractViolation(f"target must be a number in [0, 1], got {target!r}")
    if floats[-1] != float(target):
        raise ContractViolation(f"schedule ends at {floats[-1]}, not at its target {target}")
    return floats


def quantizer_codes(q: Any, weight: Any, mask: Any) -> tuple[Any, Any]:
    """``q.quantize(weight)`` as ``(codes, scale)`` with codes zeroed outside ``mask``, checked
    against ``q``'s own forward: integer codes of the weight's shape, a floating scale that
    broadcasts to it, and ``codes * scale`` equal *bitwise* to ``q(weight)`` (the artifact and the
    ONNX export rebuild the deployed weight from them, in the scale's dtype and then cast to the
    weight's, so "close" would change the model)."""
    import torch

    quantize = getattr(q, "quantize", None)
    if not callable(quantize):
        raise ContractViolation("the quantizer has no quantize(w) returning (codes, scale)")
    result = quantize(weight)
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise ContractViolation("quantize(w) must return (codes, scale)")
    codes, scale = result
    student = q(weight)
    if not isinstance(codes, torch.Tensor) or codes.shape != weight.shape:
        raise ContractViolation(f"quantize(w) must return codes of the weight's shape {tuple(weight.shape)}")
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
        raise ContractViolation("quantize(w) must return a floating scale tensor")
    codes = torch.where(mask, codes, codes.new_zeros(()))
    if codes.is_floating_point() and not bool((codes == codes.round()).all()):
        raise ContractViolation("quantize(w) returned codes that are not integers")
    try:
        recon = codes.to(scale.dtype) * scale
    except RuntimeError as e:
        raise ContractViolation(f"the scale does not broadcast to the weight ({e})") from e
    if isinstance(student, torch.Tensor) and recon.shape == student.shape:
        recon = recon.to(student.dtype)  # as the artifact's reader rebuilds it: in the scale's dtype, then cast
    if not isinstance(student, torch.Tensor) or recon.shape != weight.shape or not torch.equal(recon, student):
        diff = float((recon - student).abs().max()) if recon.shape == getattr(student, "shape", None) else float("nan")
        raise ContractViolation(f"codes * scale from quantize() differ from the quantizer's output "
                                f"(max |diff| {diff:.3g}; they must be equal bit for bit)")
    return codes, scale


def task_loss(value: Any) -> Any:
    """A task's ``loss(outputs, targets)``: a 0-d floating tensor (the core checks finiteness
    itself and stops the run on NaN/Inf, keeping the last checkpoint)."""
    import torch

    if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
        raise ContractViolation(f"the loss must be a 0-d floating tensor, got {_describe(value)}")
    return value


def task_positions(value: Any) -> Any:
    """A task's ``positions(outputs, targets)``: a 2-D floating tensor, one row per position
    that distillation compares."""
    import torch

    if not isinstance(value, torch.Tensor) or value.dim() != 2 or not value.is_floating_point():
        raise ContractViolation(f"positions must be a 2-D floating tensor (rows, values), got {_describe(value)}")
    return value


def task_stats(value: Any) -> dict[str, float]:
    """A task's ``stats(outputs, targets)``: a mapping of names to real sums, with ``loss_sum``
    and a finite, non-negative ``count`` (the core adds batches' statistics key by key; a model
    that outputs NaN may give NaN sums, which the core reports as a diverged model)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ContractViolation(f"stats must be a dict of named sums, got {type(value).__name__}")
    for key in ("loss_sum", "count"):
        if key not in value:
            raise ContractViolation(f"stats must include {key!r} (got {', '.join(value) or 'nothing'})")
    out: dict[str, float] = {}
    for key, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ContractViolation(f"stats[{key!r}] = {v!r} is not a real number")
        out[key] = float(v)
    if not math.isfinite(out["count"]) or out["count"] < 0:
        raise ContractViolation(f"stats['count'] = {out['count']} is not a finite, non-negative number")
    return out


def task_score(value: Any) -> float:
    """A task's ``score(stats)``: a real number (NaN where the split was empty)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractViolation(f"score must be a real number, got {type(value).__name__}")
    return float(value)


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)} ({getattr(value, 'dtype', '?')})" if shape is not None \
        else type(value).__name__
