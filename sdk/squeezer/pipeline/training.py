"""Training primitives shared by the stages: optimizers, the learning-rate schedule, evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from squeezer.engine.task import RunTask, TaskMismatch, add_stats, split_batch
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


def batch_to(batch: Any, device: torch.device, task: RunTask | None = None) -> tuple[Any, torch.Tensor]:
    """Split a loader batch into (inputs, targets) on ``device``: the task's split, or else
    :func:`squeezer.engine.task.split_batch` (a tuple ``(inputs, targets, ...)``, or a dict with
    its targets under ``target``/``y``/``labels``/``label``)."""
    x, y = task.split(batch) if task is not None else split_batch(batch)
    return _to(x, device), _to(y, device)


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


def default_task() -> RunTask:
    """Classification from the installed plugins: the task of a run whose recipe names none."""
    from squeezer.plugin_manager import load_registry

    return RunTask.create(load_registry(), "classification")


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], device: torch.device,
             task: RunTask | None = None) -> tuple[float, float]:
    """Mean loss and the task's metric (default classification: top-1 accuracy) of ``model`` on
    ``loader`` (eval mode, restored after)."""
    task = task or default_task()
    was_training = model.training
    model.eval()
    total: dict[str, float] = {}
    try:
        for index, batch in enumerate(loader):
            try:
                x, y = batch_to(batch, device, task)
                add_stats(total, task.stats(forward(model, x), y))
            except TaskMismatch as exc:
                raise TrainingError(f"evaluation batch {index + 1}: {exc} (check the validation loader of "
                                    "data.factory)") from exc
            except SqueezerError:
                raise
            except Exception as exc:  # the user's data or model: name where, keep the cause for --debug
                first = first_line(exc)
                raise TrainingError(f"evaluation batch {index + 1}: {type(exc).__name__}: {first} "
                                    "(check the validation loader of data.factory and the model's logits)") from exc
    finally:
        model.train(was_training)
    if not total.get("count"):
        return float("nan"), float("nan")
    return total["loss_sum"] / total["count"], task.score(total)


def check_loss(loss: torch.Tensor, where: str) -> float:
    """Return the loss as a float, or raise :class:`TrainingError` if it is NaN/Inf."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingError(f"{where}: loss became {value}; stopping (the last good checkpoint is kept)")
    return value
