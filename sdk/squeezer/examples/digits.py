"""The bundled example: a small CNN on scikit-learn's 8x8 handwritten digits (ships with sklearn).

Fixed, stratified split: 1,347 training and 450 validation images.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_model(width: int = 32, num_classes: int = 10) -> nn.Module:
    """A three-block CNN with BatchNorm for 1x8x8 inputs (about 73k weights at width 32)."""
    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * w * 4, 64), nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def digits_tensors(split_seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """The fixed train/validation split as tensor datasets (pixels scaled to [0, 1])."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_val = train_test_split(
        list(range(len(y))), test_size=450, random_state=split_seed, stratify=digits.target
    )
    return TensorDataset(x[idx_train], y[idx_train]), TensorDataset(x[idx_val], y[idx_val])


def make_loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """Training loader (shuffled from torch's global RNG, which the pipeline seeds) and validation loader."""
    train, val = digits_tensors()
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(val, batch_size=256, shuffle=False),
    )
