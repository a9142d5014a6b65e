"""Training primitives shared by the stages: optimizers, the learning-rate schedule, evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from squeezer.errors import SqueezerError, TrainingError, first_line
from squeezer.recipe.configs import Optim


def make_optimizer(groups: Iterable[dict[str, Any]], optim: Optim) -> torch.optim.Optimizer:
    """Build the optimizer a recipe asks for; a group may override ``weight_decay``."""
    groups = [g for g in groups if g["params"]]
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=optim.lr, weight_decay=optim.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, optim: Optim, progress: float) -> float:
    """Set the learning rate for ``progress`` in [0, 1] of the stage (cosine or constant)."""
    lr = optim.lr
    if optim.lr_schedule == "cosine":
        lr = optim.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


#: keys of a dict batch, in order of preference
TARGET_KEYS = ("target", "y", "labels", "label")
INPUT_KEYS = ("input", "x")


def batch_to(batch: Any, device: torch.device) -> tuple[Any, torch.Tensor]:
    """Split a loader batch into (inputs, targets) on ``device``.

    A tuple or list is ``(inputs, targets, ...)``. A dict holds its targets under ``target``,
    ``y``, ``labels`` or ``label`` and its inputs under ``input`` or ``x``, or else as all its
    other entries, passed to the model as keyword arguments (``input_ids``, ``attention_mask``).
    """
    if isinstance(batch, Mapping):
        target = next((k for k in TARGET_KEYS if k in batch), None)
        if target is None:
            raise TypeError(f"a dict batch needs its targets under one of {', '.join(TARGET_KEYS)}; "
                            f"it has {', '.join(map(str, batch))}")
        key = next((k for k in INPUT_KEYS if k in batch), None)
        x = batch[key] if key is not None else {k: v for k, v in batch.items() if k != target}
        if isinstance(x, Mapping) and not x:
            raise TypeError("a dict batch needs inputs besides its targets")
        y = batch[target]
    else:
        x, y = batch[0], batch[1]
    return _to(x, device), y.to(device, non_blocking=True)


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: _to(v, device) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(_to(v, device) for v in x)
    return x


def forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    """The logits of ``model`` on ``inputs`` from :func:`batch_to` (a dict as keyword arguments)."""
    return logits_of(model(**inputs) if isinstance(inputs, Mapping) else model(inputs))


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: the output itself, its ``logits`` entry or attribute (a
    Hugging Face ``ModelOutput``), or the first element of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    found = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if found is None and isinstance(output, tuple | list) and output:
        found = output[0]
    if not isinstance(found, torch.Tensor):
        raise TrainingError(f"the model returned {type(output).__name__}; expected logits: a tensor, a mapping "
                            "or object with a 'logits' tensor, or a tuple whose first element is the logits")
    return found


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``loader`` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    total = correct = 0
    loss_sum = 0.0
    try:
        for index, batch in enumerate(loader):
            try:
                x, y = batch_to(batch, device)
                logits = forward(model, x)
                loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            except SqueezerError:
                raise
            except Exception as exc:  # the user's data or model: name where, keep the cause for --debug
                first = first_line(exc)
                raise TrainingError(f"evaluation batch {index + 1}: {type(exc).__name__}: {first} "
                                    "(check the validation loader of data.factory and the model's logits)") from exc
            correct += int((logits.argmax(dim=-1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        return float("nan"), float("nan")
    return loss_sum / total, correct / total


def check_loss(loss: torch.Tensor, where: str) -> float:
    """Return the loss as a float, or raise :class:`TrainingError` if it is NaN/Inf."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingError(f"{where}: loss became {value}; stopping (the last good checkpoint is kept)")
    return value
