"""A small transformer classifier on the bundled 8x8 digits: each image is a sequence of 8 rows.

Each row (8 pixels) is embedded linearly to ``d_model``, a learned position embedding is added,
``layers`` ``nn.TransformerEncoderLayer`` blocks (``heads`` heads, pre-softmax attention through
``nn.MultiheadAttention``, whose input projection is the raw parameter ``in_proj_weight``) follow,
then a mean over the sequence and a linear head. Same split as :mod:`squeezer.examples.digits`.

Compress it with targets covering both the ``Linear`` layers and the attention input projections::

    [targets]
    types = ["Linear"]
    parameters = ["*.in_proj_weight"]
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from squeezer.examples.digits import digits_tensors

ROWS = 8  # sequence length: one token per image row
FEATURES = 8  # pixels per row


class DigitsTransformer(nn.Module):
    """``(N, 8, 8)`` (or ``(N, 1, 8, 8)``) images -> ``(N, num_classes)`` logits."""

    def __init__(self, d_model: int, layers: int, heads: int, num_classes: int, dim_feedforward: int) -> None:
        super().__init__()
        self.embed = nn.Linear(FEATURES, d_model)
        self.position = nn.Parameter(torch.zeros(1, ROWS, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model=d_model, nhead=heads, dim_feedforward=dim_feedforward, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # [N, 1, 8, 8] as the CNN example's loaders give
            x = x.flatten(1, 2)
        h = self.embed(x) + self.position
        out: torch.Tensor = self.head(self.encoder(h).mean(dim=1))
        return out


def make_model(
    d_model: int = 32, layers: int = 2, heads: int = 4, num_classes: int = 10, width: int | None = None
) -> nn.Module:
    """The digits transformer (about 18k weights at ``d_model=32``).

    ``width`` is an alias of ``d_model`` (so recipes and tests that scale models by ``width``
    apply to it); it must be a multiple of ``heads``. The feed-forward width is ``2 * d_model``.
    """
    if width is not None:
        d_model = width
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be a multiple of heads ({heads})")
    return DigitsTransformer(d_model, layers, heads, num_classes, dim_feedforward=2 * d_model)


def make_loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """The digits split as sequences ``[N, 8, 8]``: shuffled training loader and validation loader."""
    train, val = digits_tensors()

    def rows(ds: TensorDataset) -> TensorDataset:
        x, y = ds.tensors
        return TensorDataset(x.reshape(-1, ROWS, FEATURES), y)

    return (
        DataLoader(rows(train), batch_size=batch_size, shuffle=True),
        DataLoader(rows(val), batch_size=256, shuffle=False),
    )
