"""The bundled example: a small CNN on the 8x8 handwritten digits (UCI optdigits, as in scikit-learn).

The 1,797 images ship inside the package (``data/digits.npz``, 49 kB; licence and provenance in
``data/NOTICE``): no download and no scikit-learn. Fixed, stratified split: 1,347 training and 450
validation images.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
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


def _arrays() -> dict[str, np.ndarray]:
    """The shipped file's arrays: ``images``, ``target``, ``train``, ``val`` (see ``data/NOTICE``)."""
    with resources.files("squeezer.examples").joinpath("data/digits.npz").open("rb") as f, np.load(f) as data:
        return {name: data[name] for name in data.files}


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images, target)``: the arrays of scikit-learn's ``load_digits()`` (float64 0..16, int64)."""
    data = _arrays()
    return data["images"].astype(np.float64), data["target"].astype(np.int64)


def split_indices(split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices: stratified by digit, 450 for validation.

    Seed 0 is the shipped split (scikit-learn's ``train_test_split(..., test_size=450,
    random_state=0, stratify=target)``, order included); another seed draws a stratified split of
    the same sizes per digit from a seeded permutation (numpy's ``default_rng``).
    """
    data = _arrays()
    train, val, target = data["train"].astype(np.int64), data["val"].astype(np.int64), data["target"]
    if split_seed == 0:
        return train, val
    order = np.random.default_rng(split_seed).permutation(len(target))
    n_val = np.bincount(target[val], minlength=10)  # per digit, as many as the shipped split holds
    in_val = np.zeros(len(target), dtype=bool)
    for digit, n in enumerate(n_val):
        in_val[order[target[order] == digit][:n]] = True
    return order[~in_val[order]], order[in_val[order]]


def digits_tensors(split_seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """The fixed train/validation split as tensor datasets (pixels scaled to [0, 1])."""
    images, target = load_digits()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(target, dtype=torch.long)
    idx_train, idx_val = (torch.from_numpy(i) for i in split_indices(split_seed))
    return TensorDataset(x[idx_train], y[idx_train]), TensorDataset(x[idx_val], y[idx_val])


def make_loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """Training loader (shuffled from torch's global RNG, which the pipeline seeds) and validation loader."""
    train, val = digits_tensors()
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(val, batch_size=256, shuffle=False),
    )
