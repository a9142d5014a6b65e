"""Running the pipeline under ``torch.distributed`` (launched by ``torchrun``), on the standard engine.

Every stage trains under :class:`~torch.nn.parallel.DistributedDataParallel` with a
:class:`~torch.utils.data.DistributedSampler`; gloo on CPU, NCCL on GPUs, same code path.

What is communicated, beyond plain DDP's per-step gradient all-reduce:

- when a stage wraps the model, DDP broadcasts parameters and buffers from rank 0 (masks and
  quantizer steps included), so every rank starts the stage identical;
- after each pruning round, the masks are broadcast from rank 0 (one boolean tensor per
  compressed weight), so masks are decided once;
- one scalar all-reduce per step to agree on a graceful stop (Ctrl-C on any rank).

Only rank 0 writes checkpoints, the artifact and progress events; every rank reads the
checkpoint on resume.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, SequentialSampler

from squeezer.errors import ConfigError


@attrs.frozen
class DistInfo:
    """This process's place in the run (world size 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """Read torchrun's environment and join the process group (if not joined yet)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not dist.is_initialized():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def joined() -> Iterator[DistInfo]:
    """:func:`from_env` for the length of a run: a process group this joins is destroyed when the
    run ends (one that was joined before is left alone).

    Without it, gloo's worker threads outlive the interpreter and a rank can abort at exit with
    "terminate called without an active exception" (pytorch/pytorch#190489), after the run itself
    ended cleanly (e.g. an interrupted ``--nproc`` run printed that line before its resume hint).
    """
    was_joined = dist.is_initialized()
    info = from_env()
    try:
        yield info
    finally:
        if not was_joined and dist.is_initialized():
            dist.destroy_process_group()


def device_for(info: DistInfo, requested: torch.device) -> torch.device:
    """Each rank uses its own GPU (LOCAL_RANK); CPU ranks share the CPU."""
    if info.enabled and requested.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return requested


def wrap(module: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``module`` under DDP when distributed (broadcasting rank 0's state), else unchanged."""
    if not info.enabled or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def shard_loader(loader: Any, info: DistInfo, seed: int) -> Any:
    """The training loader with a DistributedSampler (same batch size per rank, shuffled by seed).

    Every other option of the loader is kept (collate_fn, workers and their ``worker_init_fn``,
    ``generator``, pinning, ``drop_last``, timeouts, prefetching, ...). A loader whose sampler is
    already a :class:`DistributedSampler` for this rank (a factory that shards itself, e.g. under
    a ``batch_sampler``) is used as it is. Anything else that cannot be sharded by replacing the
    sampler (a ``batch_sampler`` over a plain sampler, an iterable dataset) is a ConfigError
    naming ``data.factory``: silently giving every rank all the data would not be data parallel.
    """
    if not info.enabled or not isinstance(loader, DataLoader):
        return loader
    own = _distributed_sampler(loader)
    if own is not None:
        if (own.num_replicas, own.rank) != (info.world_size, info.rank):
            raise ConfigError(
                f"data.factory: the training loader's DistributedSampler is for rank {own.rank} of "
                f"{own.num_replicas}, but this process is rank {info.rank} of {info.world_size}"
            )
        return loader
    if isinstance(loader.dataset, IterableDataset):
        raise ConfigError(
            "data.factory: the training loader's dataset is an IterableDataset, which squeezer "
            f"cannot shard over {info.world_size} ranks; use a map-style dataset"
        )
    if loader.batch_size is None:
        raise ConfigError(
            f"data.factory: the training loader uses a batch_sampler "
            f"({type(loader.batch_sampler).__name__}), which squeezer cannot shard over "
            f"{info.world_size} ranks; return a loader with batch_size (squeezer adds a "
            "DistributedSampler), or build the batch_sampler over a "
            "torch.utils.data.DistributedSampler for this rank"
        )
    shuffle = not isinstance(loader.sampler, SequentialSampler)
    sampler: DistributedSampler[Any] = DistributedSampler(
        loader.dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed
    )
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, **_loader_options(loader))


_NOT_OPTIONS = {"self", "dataset", "batch_size", "shuffle", "sampler", "batch_sampler"}


def _loader_options(loader: DataLoader[Any]) -> dict[str, Any]:
    """Every DataLoader argument except the data and how it is sampled, as ``loader`` has it."""
    names = [n for n in inspect.signature(DataLoader.__init__).parameters if n not in _NOT_OPTIONS]
    return {n: getattr(loader, n) for n in names if hasattr(loader, n)}


def _distributed_sampler(loader: Any) -> DistributedSampler[Any] | None:
    """The DistributedSampler drawing ``loader``'s indices, directly or under its batch sampler."""
    for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if isinstance(sampler, DistributedSampler):
            return sampler
    return None


def set_epoch(loader: Any, epoch: int) -> None:
    sampler = _distributed_sampler(loader)
    if sampler is not None:
        sampler.set_epoch(epoch)


def broadcast_masks(model: nn.Module, info: DistInfo) -> None:
    """Make every rank hold rank 0's masks (after a pruning round)."""
    if not info.enabled:
        return
    from squeezer.compress.weight import compressed_weights

    for _, p in compressed_weights(model):
        as_bytes = p.mask.to(torch.uint8)
        dist.broadcast(as_bytes, src=0)
        p.mask.copy_(as_bytes.bool())


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
