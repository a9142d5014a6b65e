"""The DDP rebuild of the training loader, without processes: a fake DistInfo of world size 2."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from squeezer.errors import ConfigError
from squeezer.pipeline.distributed import DistInfo, set_epoch, shard_loader

N = 20
RANKS = [DistInfo(rank=r, world_size=2, local_rank=r) for r in (0, 1)]


def _dataset() -> TensorDataset:
    return TensorDataset(torch.arange(N), torch.arange(N) % 3)


def _init_worker(worker_id: int) -> None:  # pragma: no cover - only its identity is checked
    torch.manual_seed(worker_id)


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    return {"index": torch.stack([b[0] for b in batch]), "tagged": True}


def _indices(loader: DataLoader[Any]) -> list[int]:
    out: list[int] = []
    for batch in loader:
        out += batch["index"].tolist() if isinstance(batch, dict) else batch[0].tolist()
    return out


def test_every_loader_option_survives_the_rebuild() -> None:
    generator = torch.Generator().manual_seed(7)
    options: dict[str, Any] = dict(
        num_workers=2, collate_fn=_collate, pin_memory=True, drop_last=True, timeout=30.0,
        worker_init_fn=_init_worker, multiprocessing_context="spawn", generator=generator,
        prefetch_factor=3, persistent_workers=True,
    )
    loader = DataLoader(_dataset(), batch_size=4, shuffle=True, **options)
    for info in RANKS:
        rebuilt = shard_loader(loader, info, seed=0)
        assert isinstance(rebuilt.sampler, DistributedSampler) and rebuilt.sampler.shuffle
        assert (rebuilt.sampler.rank, rebuilt.sampler.num_replicas) == (info.rank, 2)
        assert rebuilt.batch_size == 4
        for name, value in options.items():
            got = getattr(rebuilt, name)
            if name == "multiprocessing_context":
                assert got is loader.multiprocessing_context
            else:
                assert got is value or got == value, name


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_two_shards_are_disjoint_and_cover_the_data(shuffle: bool) -> None:
    loader = DataLoader(_dataset(), batch_size=3, shuffle=shuffle, collate_fn=_collate)
    shards = [_indices(shard_loader(loader, info, seed=5)) for info in RANKS]
    assert len(shards[0]) == len(shards[1]) == N // 2
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(N))
    assert (shards[0] == sorted(shards[0])) != shuffle  # shuffled (by the seed) only if it was


def test_a_batch_sampler_loader_is_a_config_error_naming_the_data_factory() -> None:
    batches = BatchSampler(RandomSampler(_dataset()), batch_size=4, drop_last=False)
    loader = DataLoader(_dataset(), batch_sampler=batches)
    with pytest.raises(ConfigError, match=r"^data\.factory: .*batch_sampler.*DistributedSampler"):
        shard_loader(loader, RANKS[0], seed=0)


def test_a_batch_sampler_over_this_ranks_distributed_sampler_is_kept() -> None:
    shards = []
    for info in RANKS:
        sampler = DistributedSampler(_dataset(), num_replicas=2, rank=info.rank, shuffle=True, seed=3)
        loader = DataLoader(_dataset(), batch_sampler=BatchSampler(sampler, batch_size=4, drop_last=False))
        assert shard_loader(loader, info, seed=0) is loader
        set_epoch(loader, 4)
        assert sampler.epoch == 4
        shards.append(_indices(loader))
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(N))
    wrong = DataLoader(_dataset(), sampler=DistributedSampler(_dataset(), num_replicas=2, rank=1), batch_size=2)
    with pytest.raises(ConfigError, match=r"data\.factory: .*rank 1 of 2.*rank 0 of 2"):
        shard_loader(wrong, RANKS[0], seed=0)


class _Stream(IterableDataset[int]):
    def __iter__(self) -> Iterator[int]:
        return iter(range(N))


def test_an_iterable_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^data\.factory: .*IterableDataset"):
        shard_loader(DataLoader(_Stream(), batch_size=4), RANKS[1], seed=0)


def test_one_process_keeps_the_loader() -> None:
    loader = DataLoader(_dataset(), batch_size=4, sampler=SequentialSampler(_dataset()))
    assert shard_loader(loader, DistInfo(), seed=0) is loader
