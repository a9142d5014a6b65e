"""The bundled keyword-spotting DS-CNN (``squeezer.examples.kws:make_model``, width 64, 4 blocks,
21k weights) on the bundled generator of speech-command-like features (12 classes, 1x40x32).

Splits are the generator's own, with disjoint speakers: train = data seed 0 ``"train"``, validation
= data seed 0 ``"val"`` (the bundled recipe's two), test = data seed 1 ``"val"`` (a third stream,
new speakers). Sizes are smaller than the bundled recipe's 4,800 / 1,200 so that the suite fits
its time budget: 2,400 / 600 / 1,200.
"""

from __future__ import annotations

from functools import lru_cache

from benchmarks.suite.common import Splits, loaders
from torch.utils.data import DataLoader, TensorDataset

from squeezer.examples import kws

SIZES = {"train": 2400, "val": 600, "test": 1200}


@lru_cache(maxsize=2)
def make_splits(seed: int = 0) -> Splits:
    train = kws.generate(SIZES["train"], seed, "train")
    val = kws.generate(SIZES["val"], seed, "val")
    test = kws.generate(SIZES["test"], seed + 1, "val")
    return Splits(*(TensorDataset(u.x, u.y) for u in (train, val, test)))


def make_loaders(batch_size: int = 64, seed: int = 0, subset: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Shuffled training loader and validation loader (the recipe's ``data.factory``; ``subset``: only the first
    ``subset`` samples of each, for tiny runs)."""
    return loaders(make_splits(seed), batch_size, subset=subset)
