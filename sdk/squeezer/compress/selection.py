"""Mask arithmetic: exact counts, deterministic ties, linear time, never reviving a pruned weight.

Selecting the ``k`` lowest scores needs the ``k``-th smallest value (the threshold), never a sort;
ties at the threshold are broken by flat index (lower index pruned first), so results are
deterministic. :func:`lowest` finds the threshold with one ``torch.kthvalue``. The mask updates
(:func:`layer_mask`, :func:`global_masks`) use a radix select instead, which is faster and needs
no copy of its input: ``torch.kthvalue`` clones its input and allocates int64 indices (three times
the size of a float32 input), which over a whole model would be the peak of a pruning round.

The radix select works on the scores' *keys*: a float32 (float64) score's bits read as an int32
(int64) and flipped for negative numbers, so that integer order is float order (``-0.0`` is made
``+0.0`` first; NaN never reaches here). Keys are made in place, in the one flat buffer holding
the scores; the select is two (four for float64) counting passes over 16-bit digits (12-bit ones
for small tensors), processed in chunks, so temporaries stay a few MiB whatever the model size
(the later passes usually run on the few keys left in the chosen bucket only).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, MutableMapping, Sequence

import torch

#: most elements processed at once by the chunked passes (bounds every temporary)
CHUNK = 1 << 20
#: chunks are at most 1/32 of the tensor (temporaries stay small next to it), but at least this
_MIN_CHUNK = 1 << 14
_CHUNK_FRACTION = 32


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


# --------------------------------------------------------------------------------------------------
# keys and the radix select


def _chunks(t: torch.Tensor) -> Iterator[torch.Tensor]:
    n = t.numel()
    size = min(CHUNK, max(_MIN_CHUNK, n // _CHUNK_FRACTION))
    for start in range(0, n, size):
        yield t[start:start + size]


def _key_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.int64 if dtype == torch.float64 else torch.int32


def _bits(keys: torch.Tensor) -> int:
    return 64 if keys.dtype == torch.int64 else 32


def _key_of(value: float, dtype: torch.dtype) -> int:
    """The key :func:`to_keys_` gives ``value`` in a ``dtype`` (float32 or float64) buffer."""
    keys = to_keys_(torch.tensor([value], dtype=dtype))
    return int(keys[0])


def to_keys_(flat: torch.Tensor) -> torch.Tensor:
    """Turn flat float32/float64 ``flat`` (no NaN) into order-preserving integer keys, in place.

    Returns the int32/int64 view of ``flat``: ``a < b`` (floats) iff ``key(a) < key(b)``, and
    ``-0.0`` and ``+0.0`` get the same key.
    """
    flat.add_(0.0)  # -0.0 + 0.0 == +0.0: equal floats, equal keys
    keys = flat.view(_key_dtype(flat.dtype))
    low = (1 << (_bits(keys) - 1)) - 1  # all bits but the sign
    for c in _chunks(keys):
        # negative floats: flip all bits but the sign, so a larger magnitude gives a smaller key
        c.bitwise_xor_((c >> (_bits(keys) - 1)).bitwise_and_(low))
    return keys


def _digit_widths(bits: int, n: int) -> list[int]:
    """Radix digits, most significant first: 16 bits (two passes for int32 keys) once the
    histogram's 64 Ki counters are small next to ``n``, 12 bits below that."""
    width = 16 if n >= 1 << 22 else 12
    widths = [width] * (bits // width)
    return [*widths, bits - sum(widths)] if sum(widths) < bits else widths


def kth_key(keys: torch.Tensor, k: int) -> tuple[int, int]:
    """``(t, below)``: the ``k``-th smallest (1-based, ``1 <= k <= n``) of flat integer ``keys``
    and how many keys are smaller than ``t``. Linear time, and no copy of ``keys``: temporaries
    are of one chunk (see :func:`_chunks`) and one histogram."""
    n = keys.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    bits = _bits(keys)
    parts: list[torch.Tensor] = list(_chunks(keys))
    prefix = 0  # the digits found so far, as a signed integer (the top digit is signed)
    below = 0
    shift = bits
    for p, width in enumerate(_digit_widths(bits, n)):
        shift -= width
        digits = 1 << width
        hist = torch.zeros(digits, dtype=torch.int64, device=keys.device)
        for c in parts:
            if p > 0:  # only keys in the chosen bucket
                c = torch.masked_select(c, (c >> (shift + width)) == prefix)
            d = c >> shift
            d = d.add_(digits // 2) if p == 0 else d.bitwise_and_(digits - 1)
            hist += torch.bincount(d, minlength=digits)
        cum = torch.cumsum(hist, 0)
        digit = int(torch.searchsorted(cum, torch.tensor([k - below], device=cum.device)).item())
        below += int(cum[digit - 1]) if digit > 0 else 0
        prefix = digit - digits // 2 if p == 0 else (prefix << width) | digit
        count = int(hist[digit])
        if shift > 0 and len(parts) > 1 and count <= parts[0].numel():
            # few keys left in the bucket (at most a chunk): keep just those for the remaining passes
            parts = [torch.cat([torch.masked_select(c, (c >> shift) == prefix) for c in parts])]
    return prefix, below


def _select(keys: torch.Tensor, k: int) -> tuple[int, int]:
    """``(t, ties)``: the ``k`` lowest keys (ties by index) are those ``< t`` and the first
    ``ties`` of those ``== t``; ``k <= 0`` selects none (``t`` below every key), ``k >= n`` all."""
    n = keys.numel()
    if k <= 0:
        return torch.iinfo(keys.dtype).min, 0
    if k >= n:
        return torch.iinfo(keys.dtype).max, n
    t, below = kth_key(keys, k)
    return t, k - below


def _mark(c: torch.Tensor, t: int, ties: int, out: torch.Tensor) -> int:
    """``out = c < t`` plus the first ``ties`` entries ``== t``; returns the ties still wanted."""
    torch.lt(c, t, out=out)
    if ties > 0:
        eq = c == t
        count = int(eq.sum())
        if count <= ties:
            out |= eq
            return ties - count
        out[torch.nonzero(eq).squeeze(1)[:ties]] = True
        return 0
    return ties


def _mark_chunks(keys: torch.Tensor, t: int, ties: int, out: torch.Tensor) -> None:
    for c, o in zip(_chunks(keys), _chunks(out), strict=True):
        ties = _mark(c, t, ties, o)


# --------------------------------------------------------------------------------------------------
# masks


def _masked_scores(score: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Scores as one flat copy (float64 stays float64 so tiny scores keep their order), with
    already-pruned entries at -inf so they are chosen first."""
    dtype = torch.float64 if score.dtype == torch.float64 else torch.float32
    flat = score.detach().reshape(-1).to(dtype, copy=True)
    flat.masked_fill_(~current.reshape(-1), float("-inf"))
    return flat


def layer_mask(score: torch.Tensor, current: torch.Tensor, sparsity: float, keep_rows: bool = False) -> torch.Tensor:
    """New mask for one tensor at ``sparsity``; entries already pruned stay pruned. ``keep_rows``:
    every row (output channel, unit, class) with a weight left keeps its best-scored one."""
    n = score.numel()
    k = max(pruned_count(sparsity, n), n - int(current.sum()))
    flat = _masked_scores(score, current)
    keys = to_keys_(flat)
    if keep_rows and score.dim() >= 2 and n:
        inf_key, max_key = _key_of(float("inf"), flat.dtype), _key_of(torch.finfo(flat.dtype).max, flat.dtype)
        keys.clamp_(max=max_key)  # a genuine +inf must not pass for a protected entry
        k = min(k, n - _protect_rows(keys.view(score.shape[0], -1), inf_key, _key_of(float("-inf"), flat.dtype)))
    prune = torch.empty(n, dtype=torch.bool, device=score.device)
    _mark_chunks(keys, *_select(keys, k), prune)
    return prune.logical_not_().view(score.shape)


def _protect_rows(rows: torch.Tensor, inf_key: int, neg_inf_key: int) -> int:
    """Give the best key of each row of ``rows`` (a layer's keys as rows x entries) that has no
    protected entry yet and is not already empty the protected key; returns how many it protected."""
    best = rows.argmax(dim=1)  # ties: the first, so masks stay deterministic
    top = rows.gather(1, best[:, None]).squeeze(1)
    needs = torch.nonzero((top != inf_key) & (top != neg_inf_key)).squeeze(1)
    rows[needs, best[needs]] = inf_key
    return needs.numel()


def min_kept(n: int, min_density: float) -> int:
    """How many weights a layer keeps at least under global pruning (never fewer than one)."""
    return min(n, max(1, math.ceil(min_density * n)))


def global_masks(
    scores: Mapping[str, torch.Tensor],
    current: Mapping[str, torch.Tensor],
    sparsity: float,
    min_density: float = 0.0,
    *,
    keep_rows: bool = False,
    out: MutableMapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """New masks for all tensors at model-wide ``sparsity``, each keeping ``min_kept`` weights
    and, with ``keep_rows``, in every row (output channel, unit, class) that has a weight left
    its best-scored one, so no round empties a row.

    The total number of zeros is exactly ``round(sparsity * total)`` unless the minimum density or
    already pruned weights make that impossible; then it is the nearest achievable count.

    Memory: one flat float32 buffer of all scores (float64 if a score is float64) plus
    temporaries of one layer at most. ``scores`` is read once per name, in order, so a lazy
    mapping (computing each score on access) never holds more than one score tensor. With
    ``out`` (boolean tensors of the masks' shapes, e.g. the ``current`` masks themselves), the
    new masks are written there, after all scores are read, and no new mask is allocated.
    """
    names: Sequence[str] = list(scores)
    sizes = [current[n].numel() for n in names]
    total = sum(sizes)
    device = current[names[0]].device if names else torch.device("cpu")
    buffer = torch.empty(total, dtype=torch.float32, device=device)
    keeps: list[int] = []
    already = start = 0
    # 1. every layer's scores into its slice of the buffer, already-pruned entries at -inf
    for name, n in zip(names, sizes, strict=True):
        score = scores[name]
        if score.dtype == torch.float64 and buffer.dtype != torch.float64:
            wide = torch.empty(total, dtype=torch.float64, device=device)
            wide[:start].copy_(buffer[:start])
            buffer = wide
        flat = buffer[start:start + n]
        flat.copy_(score.detach().reshape(-1))
        del score
        mask = current[name].reshape(-1)
        flat.masked_fill_(~mask, float("-inf"))
        pruned_now = n - int(mask.sum())
        already += pruned_now
        keeps.append(min(min_kept(n, min_density), n - pruned_now))
        start += n
    # 2. per layer, the `keep` best entries never compete: their key becomes that of +inf, and a
    # genuine +inf score is first lowered to the largest finite value, so it cannot be mistaken
    # for one (it still ranks above every finite score)
    keys = to_keys_(buffer)
    inf_key = _key_of(float("inf"), buffer.dtype)
    max_key = _key_of(torch.finfo(buffer.dtype).max, buffer.dtype)
    neg_inf_key = _key_of(float("-inf"), buffer.dtype)
    competes_buffer = torch.empty(min(max(sizes, default=0), CHUNK), dtype=torch.bool, device=device)
    protected = sum(keeps)
    start = 0
    for name, n, keep in zip(names, sizes, keeps, strict=True):
        layer = keys[start:start + n]
        t, ties = _select(layer, n - keep)  # the n - keep lowest may be pruned; the rest is protected
        for c in _chunks(layer):
            competes = competes_buffer[:c.numel()]
            ties = _mark(c, t, ties, competes)
            c.clamp_(max=max_key)
            c.masked_fill_(competes.logical_not_(), inf_key)
        shape = current[name].shape
        if keep_rows and len(shape) >= 2 and n:
            protected += _protect_rows(layer.view(shape[0], -1), inf_key, neg_inf_key)
        start += n
    # 3. the k lowest of the whole model go
    k = min(max(pruned_count(sparsity, total), already), total - protected)
    t, ties = _select(keys, k)
    result: dict[str, torch.Tensor] = {}
    start = 0
    for name, n in zip(names, sizes, strict=True):
        target = out[name] if out is not None else torch.empty(current[name].shape, dtype=torch.bool, device=device)
        flat_out = target.view(-1)
        for c, o in zip(_chunks(keys[start:start + n]), _chunks(flat_out), strict=True):
            ties = _mark(c, t, ties, o)
            o.logical_not_()
        result[name] = target
        start += n
    return result
