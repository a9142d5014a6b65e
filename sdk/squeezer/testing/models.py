"""Tiny toy models covering the layer types squeezer targets, each with an example input.

Every factory is deterministic (seeded) and small enough for a unit test to run in milliseconds::

    from squeezer.testing.models import make
    model, x = make("cnn_bn")
    model(x)

``MODEL_NAMES`` lists them all; ``example_input(name)`` gives a matching input batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = [
    "MODEL_NAMES",
    "Toy",
    "cnn_bn",
    "conv1d_net",
    "crnn",
    "depthwise_cnn",
    "embedding_net",
    "example_input",
    "make",
    "mlp",
    "toy_loaders",
    "toy_model",
    "transformer_net",
]

_SEED = 0


class Toy(NamedTuple):
    """A toy model and an input batch it accepts (unpacks as ``model, input``)."""

    model: nn.Module
    input: torch.Tensor


def _seeded() -> torch.Generator:
    torch.manual_seed(_SEED)
    return torch.Generator().manual_seed(_SEED)


def mlp(in_features: int = 8, hidden: int = 16, classes: int = 4) -> nn.Module:
    """Two Linear layers with a ReLU: ``(N, in_features) -> (N, classes)``."""
    _seeded()
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def cnn_bn(channels: int = 3, classes: int = 4) -> nn.Module:
    """Conv2d + BatchNorm2d + ReLU + pooling + Linear: ``(N, channels, 8, 8) -> (N, classes)``."""
    _seeded()
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        _Flatten(),
        nn.Linear(8 * 2 * 2, classes),
    )


def depthwise_cnn(channels: int = 4, classes: int = 4) -> nn.Module:
    """Depthwise-separable block (grouped Conv2d then pointwise Conv2d) and a Linear head."""
    _seeded()
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, 8, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        _Flatten(),
        nn.Linear(8, classes),
    )


def conv1d_net(channels: int = 2, classes: int = 4) -> nn.Module:
    """Conv1d layers over sequences: ``(N, channels, 16) -> (N, classes)``."""
    _seeded()
    return nn.Sequential(
        nn.Conv1d(channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        _Flatten(),
        nn.Linear(6, classes),
    )


class _EmbeddingNet(nn.Module):
    def __init__(self, vocab: int, dim: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.embed(tokens).mean(dim=1))
        return out


def embedding_net(vocab: int = 32, dim: int = 8, classes: int = 4) -> nn.Module:
    """An Embedding averaged over the sequence, then a Linear head: ``(N, L) long -> (N, classes)``."""
    _seeded()
    return _EmbeddingNet(vocab, dim, classes)


class _TransformerNet(nn.Module):
    def __init__(self, vocab: int, dim: int, heads: int, layers: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(
            d_model=dim, nhead=heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder(self.embed(tokens)).mean(dim=1))
        return out


def transformer_net(vocab: int = 32, dim: int = 16, heads: int = 2, layers: int = 2, classes: int = 4) -> nn.Module:
    """A small ``nn.TransformerEncoder`` (MultiheadAttention + Linear) over embedded tokens."""
    _seeded()
    return _TransformerNet(vocab, dim, heads, layers, classes)


class _CRNN(nn.Module):
    def __init__(self, channels: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(channels, 6, 3, padding=1), nn.BatchNorm1d(6), nn.ReLU())
        self.rnn = nn.GRU(6, hidden, batch_first=True)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.conv(x).transpose(1, 2))
        h, _ = self.lstm(h)
        out: torch.Tensor = self.head(h[:, -1])
        return out


def crnn(channels: int = 2, hidden: int = 8, classes: int = 4) -> nn.Module:
    """A keyword-spotting style CRNN: Conv1d + BatchNorm1d, a GRU and a bidirectional LSTM, then a
    Linear head on the last step: ``(N, channels, 16) -> (N, classes)``."""
    _seeded()
    return _CRNN(channels, hidden, classes)


_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "mlp": mlp,
    "cnn_bn": cnn_bn,
    "depthwise_cnn": depthwise_cnn,
    "conv1d_net": conv1d_net,
    "crnn": crnn,
    "embedding_net": embedding_net,
    "transformer_net": transformer_net,
}
MODEL_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def example_input(name: str, batch: int = 2) -> torch.Tensor:
    """A deterministic input batch for the toy model ``name`` (with default sizes)."""
    g = torch.Generator().manual_seed(_SEED + 1)
    if name == "mlp":
        return torch.randn(batch, 8, generator=g)
    if name == "cnn_bn":
        return torch.randn(batch, 3, 8, 8, generator=g)
    if name == "depthwise_cnn":
        return torch.randn(batch, 4, 8, 8, generator=g)
    if name in ("conv1d_net", "crnn"):
        return torch.randn(batch, 2, 16, generator=g)
    if name in ("embedding_net", "transformer_net"):
        return torch.randint(0, 32, (batch, 5), generator=g)
    raise KeyError(f"unknown toy model {name!r} (valid: {', '.join(MODEL_NAMES)})")


def make(name: str, batch: int = 2) -> Toy:
    """The toy model ``name`` (freshly built) with an input batch for it."""
    if name not in _FACTORIES:
        raise KeyError(f"unknown toy model {name!r} (valid: {', '.join(MODEL_NAMES)})")
    return Toy(_FACTORIES[name](), example_input(name, batch))


def toy_model(name: str) -> nn.Module:
    """Recipe model factory for a toy model: ``[model] factory = "squeezer.testing.models:toy_model"``."""
    return make(name).model


def toy_loaders(name: str, samples: int = 64, batch_size: int = 16, classes: int = 4) -> tuple[Any, Any]:
    """Recipe data factory: random inputs shaped like ``example_input(name)`` with random labels
    (learnable only by memorizing; for plumbing tests), as ``(train_loader, val_loader)``."""
    from torch.utils.data import DataLoader, TensorDataset

    like = example_input(name, samples)
    g = torch.Generator().manual_seed(_SEED + 2)
    if like.dtype == torch.long:
        x = torch.randint(0, int(like.max()) + 1, like.shape, generator=g)
    else:
        x = torch.randn(like.shape, generator=g)
    data = TensorDataset(x, torch.randint(0, classes, (samples,), generator=g))
    return DataLoader(data, batch_size=batch_size, shuffle=True), DataLoader(data, batch_size=batch_size)

