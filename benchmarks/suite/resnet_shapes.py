"""A small ResNet (basic blocks with BatchNorm and identity / 1x1 projection shortcuts) on
generated 16x16 images of shapes and textures.

Ten classes: disk, ring, square, square outline, triangle, plus, X, horizontal stripes, vertical
stripes, checkerboard. Each image draws a position, size, a rotation within +-20 degrees (so that
plus and X, stripes of either direction stay distinct), outline thickness or stripe period, a
foreground and background level (sometimes inverted), a background gradient, a small distractor
blob and pixel noise; shapes are rendered at 32x32 with soft edges and averaged down to 16x16.
Generated from seeded ``torch.Generator`` objects; train, validation and test come from different
streams. At the defaults: about 77k weights.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from benchmarks.suite.common import Splits, loaders, random_shift
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CLASSES = ("disk", "ring", "square", "outline", "triangle", "plus", "x", "hstripes", "vstripes", "checker")
SIZE = 16
_RENDER = 32
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
SIZES = {"train": 2000, "val": 600, "test": 1000}


def _sdf(kind: torch.Tensor, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """Signed distance-like field (negative inside) of each sample's shape, ``(N, R, R)``."""
    rad = torch.sqrt(a * a + b * b)
    box = torch.maximum(a.abs(), b.abs())
    tri = torch.stack([a * math.cos(ang) + b * math.sin(ang) for ang in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])
    arm = 0.28

    def plus(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(p.abs() - arm, q.abs() - 0.95), torch.maximum(q.abs() - arm, p.abs() - 0.95))

    s2 = math.sqrt(0.5)
    fields = [
        rad - 0.9,
        (rad - 0.72).abs() - t,
        box - 0.72,
        (box - 0.68).abs() - t,
        tri.max(0).values - 0.5,
        plus(a, b),
        plus(s2 * (a + b), s2 * (a - b)),
        torch.maximum(torch.cos(2 * math.pi * b / period) * 0.3, rad - 1.0),
        torch.maximum(torch.cos(2 * math.pi * a / period) * 0.3, rad - 1.0),
        torch.maximum(torch.cos(2 * math.pi * a / period) * torch.cos(2 * math.pi * b / period) * 0.3, rad - 1.0),
    ]
    out = torch.zeros_like(a)
    for i, f in enumerate(fields):
        out = torch.where((kind == i).view(-1, 1, 1), f, out)
    return out


def generate(n: int, split: str = "train", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: ``n`` images ``(n, 1, 16, 16)`` (float32, about zero mean) and labels, balanced."""
    g = torch.Generator().manual_seed(0x5A9E_0000 + 8 * seed + SPLIT_STREAMS[split])

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    y = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    grid = (torch.arange(_RENDER, dtype=torch.float32) + 0.5) / _RENDER * 2 - 1
    v, w = grid.view(1, -1, 1), grid.view(1, 1, -1)
    cx, cy, r = u(-0.3, 0.3, n, 1, 1), u(-0.3, 0.3, n, 1, 1), u(0.45, 0.7, n, 1, 1)
    theta = u(-0.35, 0.35, n, 1, 1)
    du, dv = (w - cx) / r, (v - cy) / r
    a = torch.cos(theta) * du + torch.sin(theta) * dv
    b = -torch.sin(theta) * du + torch.cos(theta) * dv
    t, period = u(0.1, 0.2, n, 1, 1), u(0.55, 0.8, n, 1, 1)
    field = _sdf(y, a, b, t, period)
    shape = torch.sigmoid(-field * r / 0.04)  # soft edge about one render pixel wide
    # a distractor blob somewhere in half of the images
    bx, by, br = u(-0.9, 0.9, n, 1, 1), u(-0.9, 0.9, n, 1, 1), u(0.06, 0.14, n, 1, 1)
    blob = torch.sigmoid(-(torch.sqrt((w - bx) ** 2 + (v - by) ** 2) - br) / 0.04) * (u(0, 1, n, 1, 1) < 0.5)
    fg, bg = u(0.55, 1.0, n, 1, 1), u(0.0, 0.35, n, 1, 1)
    gx, gy = u(-0.2, 0.2, n, 1, 1), u(-0.2, 0.2, n, 1, 1)
    img = bg + gx * w + gy * v + (fg - bg) * torch.maximum(shape, blob * u(0.4, 1.0, n, 1, 1))
    invert = u(0, 1, n, 1, 1) < 0.3
    img = torch.where(invert, 1.0 - img, img)
    img = nn.functional.avg_pool2d(img.unsqueeze(1), _RENDER // SIZE)
    img = img + torch.randn(img.shape, generator=g) * u(0.03, 0.15, n, 1, 1, 1)
    return ((img - 0.45) / 0.3).float(), y


@lru_cache(maxsize=2)
def make_splits(seed: int = 0) -> Splits:
    return Splits(*(TensorDataset(*generate(SIZES[s], s, seed)) for s in ("train", "val", "test")))


def augment(x: torch.Tensor) -> torch.Tensor:
    return random_shift(x, 1)


def make_loaders(batch_size: int = 64, seed: int = 0, subset: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Shuffled, shift-augmented training loader and validation loader (the recipe's ``data.factory``).

    ``seed`` selects the generated data, not the run's seed; ``subset``: only the first ``subset``
    samples of each split, for tiny runs."""
    return loaders(make_splits(seed), batch_size, augment, subset=subset)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        out: torch.Tensor = self.relu(self.bn2(self.conv2(h)) + self.shortcut(x))
        return out


class ResNet(nn.Module):
    """``(N, 1, 16, 16)`` -> ``(N, num_classes)``: stem, three stages (16x16, 8x8, 4x4), pooling, head."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.layers = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2))
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.layers(self.stem(x)).mean(dim=(2, 3)))
        return out


def make_model(width: int = 16, num_classes: int = len(CLASSES)) -> nn.Module:
    return ResNet(width, num_classes)
