"""What is checked of the user's model and data before training starts, so that a mistake in them
is one error naming ``model.factory`` or ``data.factory`` instead of a traceback from deep inside
torch at the first step."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from squeezer.engine.task import RunTask, TaskMismatch
from squeezer.errors import ConfigError, SqueezerError, first_line
from squeezer.pipeline.training import batch_to, forward


def device_usable(name: str, device: torch.device) -> torch.device:
    """``device`` if tensors can live there on this machine; else a :class:`ConfigError`."""
    if device.type == "meta":
        raise ConfigError(f"device: {name!r} holds no data and cannot train; use 'cpu', 'cuda' or 'auto'")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, AttributeError) as exc:  # torch raises each, by backend
        first = first_line(exc) or type(exc).__name__
        raise ConfigError(f"device: {name!r} is not usable on this machine ({first}); use 'cpu' or 'auto'") from None
    return device


def first_batch(model: nn.Module, loader: Any, device: torch.device, model_name: str, data_name: str,
                task: RunTask) -> None:
    """Run the model once on the first training batch and check what the loss will need: a batch
    that splits into inputs and targets, and outputs the task can score against them (for
    classification: logits for every example, integer targets within the logits' classes). The
    model's state (BatchNorm statistics) is left untouched."""
    data = f"data.factory: {data_name!r}"
    try:
        batch = next(iter(loader), None)
    except SqueezerError:
        raise
    except Exception as exc:
        raise ConfigError(f"{data}: the training loader failed to give a batch: {type(exc).__name__}: {exc}") from exc
    if batch is None:
        raise ConfigError(f"{data}: the training loader yields no batch")
    try:
        x, y = batch_to(batch, device, task)
    except SqueezerError:
        raise
    except (TypeError, IndexError, KeyError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{data}: a batch must be (inputs, targets) or a dict with its targets under "
                          f"'labels'/'target'; got {type(batch).__name__} ({exc})") from None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = forward(model, x)
    except SqueezerError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise ConfigError(f"model.factory: {model_name!r} failed on the first batch of {data_name!r}: "
                          f"{type(exc).__name__}: {first}") from exc
    finally:
        model.train(was_training)
    try:
        task.stats(logits, y)
    except TaskMismatch as exc:
        why = str(exc).removeprefix(f"task {task.name!r}: ")
        if why.startswith("targets"):  # the task's convention: the data is at fault
            raise ConfigError(f"{data}: {why}") from None
        raise ConfigError(f"model.factory: {model_name!r} on {data_name!r}: {why}") from None
