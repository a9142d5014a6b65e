"""What the suite's members share: fixed three-way splits, loaders, on-the-fly augmentation.

Every member's data factory returns ``(train_loader, val_loader)`` as a squeezer recipe expects;
the test split is reached only through :func:`test_loader` / a member's ``make_splits`` so that
nothing tuned on validation ever sees it. Training loaders shuffle from torch's global RNG, which
the pipeline reseeds every epoch; augmentation draws from the same generator, so a run is
reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

EVAL_BATCH = 256


class Splits(NamedTuple):
    """Fixed train / validation / test datasets (unaugmented tensors)."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset


class Augmented(Dataset):
    """A tensor dataset whose inputs pass through ``augment(x_batch) -> x_batch`` when fetched.

    ``__getitems__`` lets the DataLoader fetch a whole batch at once, so augmentation is batched.
    """

    def __init__(self, base: TensorDataset, augment: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base, self.augment = base, augment

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[index]
        return self.augment(x.unsqueeze(0))[0], y

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x, y = self.base.tensors
        xb = self.augment(x[idx])
        return list(zip(xb, y[idx], strict=True))


def head(dataset: TensorDataset, n: int | None) -> TensorDataset:
    """The first ``n`` samples of ``dataset`` (all when ``n`` is ``None``)."""
    return dataset if n is None else TensorDataset(*(t[:n] for t in dataset.tensors))


def loaders(splits: Splits, batch_size: int, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
            subset: int | None = None) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, val_loader)``: the training loader shuffled (and augmented), validation in order.

    ``subset`` keeps only the first ``subset`` samples of each (tiny runs in tests); ``None``: all.
    """
    if subset is not None and subset < 1:
        raise ValueError(f"subset must be positive, got {subset}")
    train_set = head(splits.train, subset)
    train: Dataset = train_set if augment is None else Augmented(train_set, augment)
    return (DataLoader(train, batch_size=batch_size, shuffle=True),
            DataLoader(head(splits.val, subset), batch_size=EVAL_BATCH, shuffle=False))


def eval_loader(dataset: TensorDataset) -> DataLoader:
    return DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False)


def stratified_split(target: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Indices of ``len(fractions)`` disjoint parts, stratified by class, from a seeded permutation.

    Each class is cut in the given proportions (the last part takes the rest); every part keeps
    the permutation's order, so the split is a pure function of ``(target, fractions, seed)``.
    """
    order = np.random.default_rng(seed).permutation(len(target))
    part = np.empty(len(target), dtype=np.int64)
    for c in np.unique(target):
        members = order[target[order] == c]
        cuts = np.round(np.cumsum(fractions)[:-1] * len(members)).astype(int)
        for i, chunk in enumerate(np.split(members, cuts)):
            part[chunk] = i
    return [order[part[order] == i] for i in range(len(fractions))]


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image of ``(N, C, H, W)`` by up to ``max_shift`` pixels each way (zero fill)."""
    n, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,))
    dx = torch.randint(0, 2 * max_shift + 1, (n,))
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * max_shift)
    out = pad.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, cols)
