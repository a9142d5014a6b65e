"""What is checked of the user's model and data before training starts, so that a mistake in them
is one error naming ``model.factory`` or ``data.factory`` instead of a traceback from deep inside
torch at the first step."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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


def first_batch(model: nn.Module, loader: Any, device: torch.device, model_name: str, data_name: str) -> None:
    """Run the model once on the first training batch and check what the loss will need: a batch
    that splits into inputs and integer class targets, logits for every example, and targets
    within the logits' classes. The model's state (BatchNorm statistics) is left untouched."""
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
        x, y = batch_to(batch, device)
    except (TypeError, IndexError, KeyError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{data}: a batch must be (inputs, targets) or a dict with its targets under "
                          f"'labels'/'target'; got {type(batch).__name__} ({exc})") from None
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ConfigError(f"{data}: targets must be integer class indices (torch.long), got {y.dtype}")
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
    if y.dim() == 0 or logits.dim() != y.dim() + 1 or logits.shape[0] != y.shape[0]:
        raise ConfigError(f"model.factory: {model_name!r} returned logits of shape {tuple(logits.shape)} for "
                          f"targets of shape {tuple(y.shape)} from {data_name!r}; expected (batch, classes) "
                          "logits for (batch,) class indices")
    classes = logits.shape[1]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ConfigError(f"{data}: targets must lie in 0..{classes - 1} (the model's {classes} logits), "
                          f"got {int(y.min())}..{int(y.max())}")
