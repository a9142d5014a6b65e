"""A run leaves the process group it joined (and only that one): gloo's threads must not outlive it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch.distributed as dist

from squeezer.pipeline import distributed


def _join_one_rank() -> distributed.DistInfo:
    """What :func:`distributed.from_env` does under torchrun, for a world of one (no launcher)."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return distributed.DistInfo(0, 1, 0)


@pytest.fixture
def one_rank(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(distributed, "from_env", _join_one_rank)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_the_group_a_run_joined_is_destroyed_when_it_ends(one_rank: None) -> None:
    assert not dist.is_initialized()
    with distributed.joined() as info:
        assert dist.is_initialized() and info.is_main
    assert not dist.is_initialized()


def test_also_when_the_run_fails(one_rank: None) -> None:
    with pytest.raises(KeyboardInterrupt), distributed.joined():
        raise KeyboardInterrupt
    assert not dist.is_initialized()


def test_a_group_joined_before_the_run_is_left_alone(one_rank: None) -> None:
    _join_one_rank()
    with distributed.joined():
        pass
    assert dist.is_initialized()
