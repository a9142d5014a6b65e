"""Data and model factories with the mistakes users make (for test_bad_data.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _tensors(n: int = 64, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g)


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 16) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def float_targets() -> tuple[Any, Any]:
    x, y = _tensors()
    return _loader(x, y.float()), _loader(x, y.float())


def targets_out_of_range() -> tuple[Any, Any]:
    x, y = _tensors()
    return _loader(x, y + 10), _loader(x, y)


def late_bad_target() -> tuple[Any, Any]:
    """Fine first batch, one target out of range in the third."""
    x, y = _tensors()
    y = y.clone()
    y[40] = 99
    return _loader(x, y), _loader(x, y)


def bad_validation_targets() -> tuple[Any, Any]:
    x, y = _tensors()
    return _loader(x, y), _loader(x, y + 50)


def datasets() -> tuple[Any, Any]:
    x, y = _tensors()
    return TensorDataset(x, y), TensorDataset(x, y)


def generators() -> tuple[Any, Any]:
    x, y = _tensors()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(x), 16):
            yield x[i:i + 16], y[i:i + 16]

    return batches(), batches()


def inputs_only() -> tuple[Any, Any]:
    x, _ = _tensors()
    return [(x[:16],)], [(x[:16],)]


def wrong_input_shape() -> tuple[Any, Any]:
    _, y = _tensors()
    x = torch.rand(len(y), 3, 5, 5)
    return _loader(x, y), _loader(x, y)


def one_loader() -> Any:
    x, y = _tensors()
    return _loader(x, y)


def few_logits() -> nn.Module:
    """Four logits for ten classes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))


def flat_logits() -> nn.Module:
    """One value per example instead of (batch, classes)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 1), nn.Flatten(0))
