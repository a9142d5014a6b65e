"""The bundled digits CNN (``squeezer.examples.digits:make_model``) on a three-way split of the
shipped 8x8 digits.

Test: the 450 images of the bundled validation split (the numbers users know); train and
validation: the bundled 1,347 training images cut 1,047 / 300, stratified by digit (fixed seed).
No augmentation (as in the bundled example).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from benchmarks.suite.common import Splits, loaders, stratified_split
from torch.utils.data import DataLoader, TensorDataset

from squeezer.examples.digits import load_digits, split_indices

VAL = 300  # of the bundled training images
SPLIT_SEED = 16


def digit_indices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices into the 1,797 shipped images: train (1,047), validation (300), test (450)."""
    _, target = load_digits()
    rest, test = split_indices(0)
    fit, val = stratified_split(target[rest], (1 - VAL / len(rest), VAL / len(rest)), SPLIT_SEED)
    return rest[fit], rest[val], test


def digit_tensors(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """All images as ``(1797, 1, size, size)`` floats in [0, 1] (bilinear upsampling if ``size`` > 8)."""
    images, target = load_digits()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x, torch.tensor(target, dtype=torch.long)


@lru_cache(maxsize=2)
def make_splits(size: int = 8) -> Splits:
    x, y = digit_tensors(size)
    parts = [torch.from_numpy(i) for i in digit_indices()]
    return Splits(*(TensorDataset(x[i], y[i]) for i in parts))


def make_loaders(batch_size: int = 64, subset: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Shuffled training loader and validation loader (the recipe's ``data.factory``; ``subset``: only the first
    ``subset`` samples of each, for tiny runs)."""
    return loaders(make_splits(), batch_size, subset=subset)
