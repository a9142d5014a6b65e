"""A MobileNetV2-style network (inverted residuals: 1x1 expand, 3x3 depthwise, 1x1 project, all
with BatchNorm) on the digits upsampled to 16x16, with random shifts as augmentation.

Same three-way split as :mod:`benchmarks.suite.digits_cnn` (train 1,047, validation 300, test 450).
At the defaults: about 43k weights, a third of the convolutions depthwise.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from benchmarks.suite.common import Splits, loaders, random_shift
from benchmarks.suite.digits_cnn import make_splits as digit_splits
from torch import nn
from torch.utils.data import DataLoader

SIZE = 16
MAX_SHIFT = 2


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return x + out if self.residual else out


class MobileNet(nn.Module):
    """``(N, 1, 16, 16)`` -> ``(N, num_classes)``."""

    def __init__(self, width: int, expand: int, num_classes: int) -> None:
        super().__init__()
        w = width
        # (out channels, stride): 16x16 -> 8x8 -> 4x4
        layout = [(w, 1), (2 * w, 2), (2 * w, 1), (4 * w, 2), (4 * w, 1)]
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU6())
        blocks, cin = [], w
        for cout, stride in layout:
            blocks.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(cin, 8 * w, 1, bias=False), nn.BatchNorm2d(8 * w), nn.ReLU6())
        self.classifier = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))
        out: torch.Tensor = self.classifier(h)
        return out


def make_model(width: int = 12, expand: int = 4, num_classes: int = 10) -> nn.Module:
    return MobileNet(width, expand, num_classes)


@lru_cache(maxsize=2)
def make_splits() -> Splits:
    return digit_splits(SIZE)


def augment(x: torch.Tensor) -> torch.Tensor:
    return random_shift(x, MAX_SHIFT)


def make_loaders(batch_size: int = 64, subset: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Shuffled, shift-augmented training loader and validation loader (the recipe's ``data.factory``;
    ``subset``: only the first ``subset`` samples of each, for tiny runs)."""
    return loaders(make_splits(), batch_size, augment, subset=subset)
