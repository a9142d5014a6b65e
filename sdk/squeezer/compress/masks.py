"""Mask arithmetic: exact counts, deterministic ties, linear time, never reviving a pruned weight.

Selecting the ``k`` lowest scores uses one ``kthvalue`` (linear time) instead of a sort; ties at
the threshold are broken by flat index (lower index pruned first), so results are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def pruned_count(sparsity: float, n: int) -> int:
    """The number of zeros a sparsity asks for: ``round(sparsity * n)`` (Python's rounding)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return min(n, max(0, round(sparsity * n)))


def lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean tensor (flat) marking the ``k`` lowest of flat ``scores``, ties by lowest index."""
    n = scores.numel()
    out = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return out
    if k >= n:
        return out.fill_(True)
    threshold = torch.kthvalue(scores, k).values
    torch.lt(scores, threshold, out=out)
    need = k - int(out.sum())
    if need > 0:
        ties = torch.nonzero(scores == threshold).squeeze(1)[:need]
        out[ties] = True
    return out


def _masked_scores(score: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Scores as one flat copy (float64 stays float64 so tiny scores keep their order), with
    already-pruned entries at -inf so they are chosen first."""
    dtype = torch.float64 if score.dtype == torch.float64 else torch.float32
    flat = score.detach().reshape(-1).to(dtype, copy=True)
    flat.masked_fill_(~current.reshape(-1), float("-inf"))
    return flat


def layer_mask(score: torch.Tensor, current: torch.Tensor, sparsity: float) -> torch.Tensor:
    """New mask for one tensor at ``sparsity``; entries already pruned stay pruned."""
    n = score.numel()
    k = max(pruned_count(sparsity, n), int((~current).sum()))
    prune = lowest(_masked_scores(score, current), k)
    return (~prune).view(score.shape)


def min_kept(n: int, min_density: float) -> int:
    """How many weights a layer keeps at least under global pruning (never fewer than one)."""
    return min(n, max(1, math.ceil(min_density * n)))


def global_masks(
    scores: Mapping[str, torch.Tensor],
    current: Mapping[str, torch.Tensor],
    sparsity: float,
    min_density: float = 0.0,
) -> dict[str, torch.Tensor]:
    """New masks for all tensors at model-wide ``sparsity``, each keeping ``min_kept`` weights.

    The total number of zeros is exactly ``round(sparsity * total)`` unless the minimum density or
    already pruned weights make that impossible; then it is the nearest achievable count.
    """
    names: Sequence[str] = list(scores)
    sizes = [scores[n].numel() for n in names]
    total = sum(sizes)
    wide = any(scores[n].dtype == torch.float64 for n in names)
    flats = []
    already = protected = 0
    for name, n in zip(names, sizes, strict=True):
        flat = _masked_scores(scores[name], current[name])
        if wide:
            flat = flat.double()
        pruned_now = int((~current[name]).sum())
        already += pruned_now
        keep = min(min_kept(n, min_density), n - pruned_now)
        protect = ~lowest(flat, n - keep)  # the `keep` best entries never compete
        # +inf marks protected entries; a genuine +inf score is lowered to the largest finite
        # value first, so it cannot be mistaken for one (it still ranks above every finite score)
        flat.clamp_(max=torch.finfo(flat.dtype).max)
        flat.masked_fill_(protect, float("inf"))
        protected += keep
        flats.append(flat)
    k = min(max(pruned_count(sparsity, total), already), total - protected)
    prune = lowest(torch.cat(flats), k)
    out: dict[str, torch.Tensor] = {}
    for name, chunk in zip(names, torch.split(prune, sizes), strict=True):
        out[name] = (~chunk).view(scores[name].shape)
    return out
