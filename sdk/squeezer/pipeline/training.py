"""Training primitives shared by the stages: optimizers, the learning-rate schedule, evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from squeezer.errors import TrainingError
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


def batch_to(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a loader batch into (inputs, targets) on ``device``."""
    if isinstance(batch, dict):
        x, y = batch.get("input", batch.get("x")), batch.get("target", batch.get("y"))
        if x is None or y is None:
            raise TypeError("a dict batch needs 'input'/'x' and 'target'/'y' keys")
    else:
        x, y = batch[0], batch[1]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``loader`` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    total = correct = 0
    loss_sum = 0.0
    try:
        for batch in loader:
            x, y = batch_to(batch, device)
            logits = model(x)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
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
