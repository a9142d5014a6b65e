"""A recurrent classifier (two-layer ``nn.GRU``, a linear head on the last hidden state) on
generated three-axis accelerometer windows, in the manner of human-activity recognition.

Six activities: walking, jogging, stairs up, stairs down, sitting, standing. A window is 64
samples at 25 Hz (2.6 s) in units of g: gravity in the body frame (upright, or tilted forward when
sitting), turned by a random device orientation (up to about 25 degrees), plus, for the moving
activities, a periodic body acceleration at a step frequency drawn from overlapping per-activity
ranges, whose waveform (harmonic amplitudes and phases on the vertical, forward and lateral axes,
lateral sway at half the step frequency) is the activity's, jittered per window; then sensor
noise, slow drift and, now and then, a fidget transient. Walking and stairs down overlap in
frequency and differ in waveform; sitting and standing differ by the tilt, which the device
orientation blurs. Generated from seeded ``torch.Generator`` objects; train, validation and test
come from different streams. At the defaults: about 37k weights.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from benchmarks.suite.common import Splits, loaders
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CLASSES = ("walk", "jog", "upstairs", "downstairs", "sit", "stand")
STEPS = 64
RATE = 25.0  # Hz
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
SIZES = {"train": 2400, "val": 600, "test": 1200}

# step frequency range (Hz) and body-acceleration amplitude (g) per moving activity
_FREQ = {0: (1.5, 2.1), 1: (2.3, 3.0), 2: (1.2, 1.7), 3: (1.6, 2.2)}
_AMP = {0: (0.2, 0.4), 1: (0.6, 1.0), 2: (0.18, 0.35), 3: (0.3, 0.5)}
# harmonic amplitudes [axis (vertical, forward, lateral)][harmonic 1..3] and phases
_HARM = {
    0: ([[1.0, 0.5, 0.1], [0.5, 0.3, 0.1], [0.3, 0.1, 0.0]], [[0.0, 0.0, 0.0], [1.6, 0.0, 0.0], [0.0, 0.0, 0.0]]),
    1: ([[1.0, 0.6, 0.3], [0.6, 0.4, 0.2], [0.4, 0.2, 0.1]], [[0.0, 0.3, 0.0], [1.6, 0.0, 0.0], [0.0, 0.0, 0.0]]),
    2: ([[1.0, 0.3, 0.1], [0.9, 0.5, 0.1], [0.3, 0.1, 0.0]], [[0.0, 1.2, 0.0], [0.8, 0.0, 0.0], [0.0, 0.0, 0.0]]),
    3: ([[1.0, 0.5, 0.5], [0.4, 0.3, 0.3], [0.3, 0.1, 0.1]], [[0.0, -0.8, 0.5], [2.4, 0.0, 0.0], [0.0, 0.0, 0.0]]),
}
_SIT_TILT = 0.55  # rad, forward lean of the sensor when sitting


def _rotation(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``(N, 3, 3)`` rotations about unit ``axis`` ``(N, 3)`` by ``angle`` ``(N,)``."""
    k = axis / axis.norm(dim=1, keepdim=True)
    zero = torch.zeros_like(angle)
    kx, ky, kz = k.unbind(1)
    cross = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], dim=1).view(-1, 3, 3)
    s, c = torch.sin(angle).view(-1, 1, 1), torch.cos(angle).view(-1, 1, 1)
    return torch.eye(3).expand_as(cross) + s * cross + (1 - c) * (cross @ cross)


def generate(n: int, split: str = "train", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: ``n`` windows ``(n, 64, 3)`` (float32, g) and labels (balanced)."""
    g = torch.Generator().manual_seed(0x6A55_0000 + 8 * seed + SPLIT_STREAMS[split])

    def u(lo: float | torch.Tensor, hi: float | torch.Tensor, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    y = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    t = torch.arange(STEPS, dtype=torch.float32) / RATE  # (T,)
    # gravity in the body frame (x forward, y lateral, z vertical)
    tilt = torch.where(y == 4, torch.full((n,), _SIT_TILT), torch.zeros(n)) + u(-0.15, 0.15, n)
    gravity = torch.stack([torch.sin(tilt), torch.zeros(n), torch.cos(tilt)], dim=1)  # (n, 3)
    body = torch.zeros(n, STEPS, 3)
    moving = y < 4
    lo_f, hi_f = (torch.tensor([_FREQ.get(int(c), (0.0, 0.0))[i] for c in y]) for i in (0, 1))
    lo_a, hi_a = (torch.tensor([_AMP.get(int(c), (0.0, 0.0))[i] for c in y]) for i in (0, 1))
    freq, amp = u(lo_f, hi_f, n), u(lo_a, hi_a, n)
    harm = torch.zeros(n, 3, 3)
    phase = torch.zeros(n, 3, 3)
    for c, (h, p) in _HARM.items():
        sel = y == c
        harm[sel], phase[sel] = torch.tensor(h), torch.tensor(p)
    harm = harm * u(0.7, 1.3, n, 3, 3)
    phase = phase + torch.randn(n, 3, 3, generator=g) * 0.3
    start = u(0.0, 2 * math.pi, n)
    for k in range(3):
        arg = 2 * math.pi * freq.view(n, 1) * (k + 1) * t.view(1, -1) + (k + 1) * start.view(n, 1)
        for axis in range(2):
            body[:, :, (2, 0)[axis]] += harm[:, axis, k].view(n, 1) * torch.sin(arg + phase[:, axis, k].view(n, 1))
        # lateral sway at half the step frequency (one stride = two steps)
        half = arg / 2 + phase[:, 2, k].view(n, 1)
        body[:, :, 1] += harm[:, 2, k].view(n, 1) * torch.sin(half)
    body = body * (amp * moving).view(n, 1, 1)
    # standing and sitting: slow sway and an occasional fidget
    sway = torch.sin(2 * math.pi * u(0.1, 0.5, n, 1, 3) * t.view(1, -1, 1) + u(0, 6.3, n, 1, 3)) * u(0.0, 0.03, n, 1, 3)
    fidget_at, fidget_w = u(0.0, STEPS / RATE, n, 1, 1), u(0.08, 0.3, n, 1, 1)
    fidget = torch.exp(-0.5 * ((t.view(1, -1, 1) - fidget_at) / fidget_w) ** 2) * u(-0.4, 0.4, n, 1, 3)
    fidget = fidget * (u(0, 1, n, 1, 1) < 0.3)
    signal = gravity.view(n, 1, 3) + body + sway + fidget
    # device orientation, then sensor noise and drift
    rot = _rotation(torch.randn(n, 3, generator=g), u(0.0, 0.45, n))
    signal = signal @ rot.transpose(1, 2)
    drift = u(-0.05, 0.05, n, 1, 3) * t.view(1, -1, 1)
    noise = torch.randn(n, STEPS, 3, generator=g) * u(0.02, 0.08, n, 1, 1)
    return (signal + drift + noise).float(), y


@lru_cache(maxsize=2)
def make_splits(seed: int = 0) -> Splits:
    return Splits(*(TensorDataset(*generate(SIZES[s], s, seed)) for s in ("train", "val", "test")))


def make_loaders(batch_size: int = 64, seed: int = 0, subset: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Shuffled training loader and validation loader (the recipe's ``data.factory``; ``subset``: only the first
    ``subset`` samples of each, for tiny runs)."""
    return loaders(make_splits(seed), batch_size, subset=subset)


class GRUClassifier(nn.Module):
    """``(N, 64, 3)`` windows -> ``(N, num_classes)``: a GRU, its last hidden state, a linear head."""

    def __init__(self, hidden: int, layers: int, num_classes: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.rnn(x)
        out: torch.Tensor = self.head(h[-1])
        return out


def make_model(hidden: int = 64, layers: int = 2, num_classes: int = len(CLASSES)) -> nn.Module:
    return GRUClassifier(hidden, layers, num_classes)
