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

import os
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler


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
    """The training loader with a DistributedSampler (same batch size per rank, shuffled by seed)."""
    if not info.enabled or not isinstance(loader, DataLoader):
        return loader
    shuffle = not isinstance(loader.sampler, SequentialSampler)
    sampler: DistributedSampler[Any] = DistributedSampler(
        loader.dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed
    )
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last)


def set_epoch(loader: Any, epoch: int) -> None:
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
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
