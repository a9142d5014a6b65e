"""Properties of masks: exact counts, zeros in forward and gradient, monotone, deterministic, durable."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import squeezer
from squeezer import compress
from squeezer.compress.selection import global_masks, layer_mask, lowest, min_kept, pruned_count
from squeezer.testing.conformance import weight_tensors
from squeezer.testing.models import MODEL_NAMES, make

REGISTRY = squeezer.load_registry(autoload=False)
L1 = REGISTRY.create("importance", "l1")
sparsities = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0))


def l1_score(_path: str, w: torch.Tensor) -> torch.Tensor:
    result: torch.Tensor = L1(w)
    return result


class Holder(nn.Module):
    """Weights of any shape held by named submodules (``layers.<i>.weight``)."""

    def __init__(self, *weights: torch.Tensor) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_One(w) for w in weights)

    def forward(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.layers]


class _One(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(w.detach().clone())


def holder(*weights: torch.Tensor) -> Holder:
    model = Holder(*weights)
    compress.attach_paths(model, [f"layers.{i}.weight" for i in range(len(weights))])
    return model


def zeros_of(mask: torch.Tensor) -> int:
    return int((~mask).sum())


def oracle_lowest(scores: list[float], k: int) -> set[int]:
    """The k lowest scores, ties by lowest index: an independent reference for ``lowest``."""
    return set(sorted(range(len(scores)), key=lambda i: (scores[i], i))[: max(k, 0)])


# --------------------------------------------------------------------------------------------------
# per layer and global counts, zeros in forward and in gradient


@given(w=weight_tensors(), s=sparsities)
def test_layer_scope_prunes_exactly_round_s_n(w: torch.Tensor, s: float) -> None:
    model = holder(w)
    report = compress.prune(model, l1_score, s, scope="layer")
    mask = compress.masks(model)["layers.0.weight"]
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert zeros_of(mask) == round(s * w.numel())
    assert report[0].zeros == round(s * w.numel()) and report[0].numel == w.numel()


@given(w=weight_tensors(), s=sparsities, seed=st.integers(0, 2**16))
def test_pruned_entries_are_zero_in_forward_and_gradient(w: torch.Tensor, s: float, seed: int) -> None:
    model = holder(w)
    compress.prune(model, l1_score, s, scope="layer")
    mask = compress.masks(model)["layers.0.weight"]
    (out,) = model()
    assert out.dtype == w.dtype
    assert bool((out[~mask] == 0).all())
    assert torch.equal(out[mask], w[mask])
    upstream = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)).to(w.dtype)
    upstream[0] = float("nan") if w.numel() > 1 else upstream[0]  # NaN upstream must not leak into pruned grads
    (out * upstream).sum().backward()
    grad = compress.original(model, "layers.0.weight").grad
    assert grad is not None
    assert bool((grad[~mask] == 0).all())
    finite = torch.isfinite(upstream)
    assert torch.equal(grad[mask & finite], upstream[mask & finite])


@given(
    ws=st.lists(weight_tensors(), min_size=1, max_size=4),
    s=sparsities,
    min_density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
)
def test_global_scope_total_and_min_density(ws: list[torch.Tensor], s: float, min_density: float) -> None:
    model = holder(*ws)
    compress.prune(model, l1_score, s, scope="global", min_density=min_density)
    masks = compress.masks(model)
    sizes = [w.numel() for w in ws]
    total = sum(sizes)
    floor = sum(max(1, math.ceil(min_density * n)) for n in sizes)  # weights that must stay
    wanted = round(s * total)
    zeros = sum(zeros_of(m) for m in masks.values())
    assert zeros == min(wanted, total - floor)
    for (path, mask), w in zip(masks.items(), ws, strict=True):
        assert mask.shape == w.shape and mask.dtype == torch.bool, path
        assert int(mask.sum()) >= max(1, math.ceil(min_density * w.numel())), path


@given(ws=st.lists(weight_tensors(dtypes=(torch.float32,)), min_size=1, max_size=3), s=sparsities)
def test_global_scope_prunes_the_globally_lowest_ties_by_index(ws: list[torch.Tensor], s: float) -> None:
    model = holder(*ws)
    compress.prune(model, l1_score, s, scope="global", min_density=0.0)
    flat_masks = torch.cat([m.reshape(-1) for m in compress.masks(model).values()])
    scores = torch.cat([w.abs().reshape(-1) for w in ws]).tolist()
    total = len(scores)
    k = min(round(s * total), total - len(ws))  # every layer keeps at least one weight
    # the reference: each layer protects its best entry, then the k globally lowest go
    protected: set[int] = set()
    start = 0
    for w in ws:
        n = w.numel()
        local = scores[start:start + n]
        kept_local = set(range(n)) - oracle_lowest(local, n - 1)
        protected |= {start + i for i in kept_local}
        start += n
    candidates = [math.inf if i in protected else v for i, v in enumerate(scores)]
    expected = oracle_lowest(candidates, k)
    assert {i for i, keep in enumerate(flat_masks.tolist()) if not keep} == expected


# --------------------------------------------------------------------------------------------------
# monotone under every built-in schedule, even when weights change between rounds


@given(
    w=weight_tensors(),
    name=st.sampled_from(["one_shot", "geometric", "cubic"]),
    target=sparsities,
    rounds=st.integers(1, 6),
    scope=st.sampled_from(["layer", "global"]),
    seed=st.integers(0, 2**16),
)
def test_masks_never_revive_under_schedules(
    w: torch.Tensor, name: str, target: float, rounds: int, scope: str, seed: int
) -> None:
    options: dict[str, object] = {"target": target}
    if name != "one_shot":
        options["rounds"] = rounds
    schedule = REGISTRY.create("scheduler", name, options).sparsities()
    model = holder(w)
    path = "layers.0.weight"
    g = torch.Generator().manual_seed(seed)
    previous = torch.ones(w.shape, dtype=torch.bool)
    for s in schedule:
        compress.prune(model, l1_score, s, scope=scope)
        mask = compress.masks(model)[path]
        assert bool((mask <= previous).all()), f"revived at sparsity {s}"
        expected = round(s * w.numel()) if scope == "layer" else min(round(s * w.numel()), w.numel() - 1)
        assert zeros_of(mask) == max(expected, zeros_of(previous))
        previous = mask
        with torch.no_grad():  # "training": pruned entries of W may grow large (the PQK teacher trains them)
            orig = compress.original(model, path)
            orig.add_((torch.randn(w.shape, generator=g) * 10).to(w.dtype))


# --------------------------------------------------------------------------------------------------
# determinism, ties, idempotence


@given(w=weight_tensors(), s=sparsities, scope=st.sampled_from(["layer", "global"]))
def test_deterministic_same_input_same_mask(w: torch.Tensor, s: float, scope: str) -> None:
    a, b = holder(w), holder(w.clone())
    compress.prune(a, l1_score, s, scope=scope)
    compress.prune(b, l1_score, s, scope=scope)
    assert torch.equal(compress.masks(a)["layers.0.weight"], compress.masks(b)["layers.0.weight"])


@given(w=weight_tensors(), s=sparsities)
def test_ties_pruned_lowest_index_first(w: torch.Tensor, s: float) -> None:
    model = holder(w)
    compress.prune(model, l1_score, s, scope="layer")
    mask = compress.masks(model)["layers.0.weight"].reshape(-1)
    scores = w.float().abs().reshape(-1).tolist()
    expected = oracle_lowest(scores, round(s * w.numel()))
    assert {i for i, keep in enumerate(mask.tolist()) if not keep} == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_all_equal_weights_prune_the_first_indices(dtype: torch.dtype) -> None:
    model = holder(torch.full((3, 4), 0.5, dtype=dtype))
    compress.prune(model, l1_score, 0.5, scope="layer")
    flat = compress.masks(model)["layers.0.weight"].reshape(-1)
    assert flat.tolist() == [False] * 6 + [True] * 6


@given(
    ws=st.lists(weight_tensors(), min_size=1, max_size=3),
    s=sparsities,
    scope=st.sampled_from(["layer", "global"]),
    min_density=st.sampled_from([0.0, 0.3]),
)
def test_reapplying_the_same_sparsity_changes_nothing(
    ws: list[torch.Tensor], s: float, scope: str, min_density: float
) -> None:
    model = holder(*ws)
    compress.prune(model, l1_score, s, scope=scope, min_density=min_density)
    first = compress.masks(model)
    compress.prune(model, l1_score, s, scope=scope, min_density=min_density)
    second = compress.masks(model)
    assert all(torch.equal(first[p], second[p]) for p in first)


# --------------------------------------------------------------------------------------------------
# NaN / Inf weights


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_non_finite_weights_rejected_naming_the_parameter(bad: float, dtype: torch.dtype) -> None:
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    model.add_module("head", nn.Linear(3, 2))
    model.to(dtype)
    compress.attach(model)
    with torch.no_grad():
        compress.original(model, "head.weight")[1, 0] = bad
    with pytest.raises(squeezer.TargetError, match=r"head\.weight"):
        compress.prune(model, l1_score, 0.5)
    with pytest.raises(squeezer.TargetError, match=r"head\.weight"):
        compress.prune(model, l1_score, 0.5, scope="layer")


# --------------------------------------------------------------------------------------------------
# masks survive state_dict save/load, torch.save/torch.load(weights_only=True) and deepcopy


def _pruned(name: str, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, torch.Tensor]:
    model, x = make(name)
    model.to(dtype).eval()
    if x.is_floating_point():
        x = x.to(dtype)
    compress.attach(model)
    compress.prune(model, l1_score, 0.6, min_density=0.1)
    return model, x


def _same_masks(a: nn.Module, b: nn.Module) -> bool:
    ma, mb = compress.masks(a), compress.masks(b)
    return ma.keys() == mb.keys() and all(torch.equal(ma[p], mb[p]) for p in ma)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_masks_survive_state_dict_and_torch_save(name: str) -> None:
    model, x = _pruned(name)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh, _ = make(name)
    fresh.eval()
    compress.attach_paths(fresh, compress.spec(model)["weights"])
    fresh.load_state_dict(state)
    assert _same_masks(model, fresh)
    assert compress.sparsity(fresh) == compress.sparsity(model) > 0
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masks_survive_state_dict_in_half_precision(dtype: torch.dtype) -> None:
    model, x = _pruned("mlp", dtype)
    fresh, _ = make("mlp")
    fresh.to(dtype)
    compress.attach_paths(fresh, compress.spec(model)["weights"])
    fresh.load_state_dict(model.state_dict())
    assert _same_masks(model, fresh)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_masks_survive_deepcopy(name: str) -> None:
    model, x = _pruned(name)
    clone = copy.deepcopy(model)
    assert _same_masks(model, clone)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
    # the copy is independent
    path = next(iter(compress.masks(clone)))
    dict(compress.compressed_weights(clone))[path].mask.fill_(False)
    assert not _same_masks(model, clone)
    assert bool(compress.masks(model)[path].any())


# --------------------------------------------------------------------------------------------------
# unit tests of the mask arithmetic


def test_lowest_examples() -> None:
    t = torch.tensor([3.0, 1.0, 2.0, 1.0, 5.0])
    assert lowest(t, 2).tolist() == [False, True, False, True, False]
    assert lowest(t, 3).tolist() == [False, True, True, True, False]
    assert lowest(t, 0).tolist() == [False] * 5
    assert lowest(t, -1).tolist() == [False] * 5
    assert lowest(t, 5).tolist() == [True] * 5
    assert lowest(t, 9).tolist() == [True] * 5
    assert lowest(torch.ones(4), 2).tolist() == [True, True, False, False]
    assert lowest(torch.tensor([2.0, 1.0, 1.0, 1.0]), 2).tolist() == [False, True, True, False]
    assert lowest(torch.tensor([0.0, float("-inf"), 1.0]), 1).tolist() == [False, True, False]
    assert lowest(torch.tensor([7.0]), 1).tolist() == [True]
    assert lowest(torch.tensor([]), 0).tolist() == []


@given(scores=st.lists(st.integers(-3, 3).map(float), min_size=1, max_size=40), data=st.data())
def test_lowest_matches_reference(scores: list[float], data: st.DataObject) -> None:
    k = data.draw(st.integers(-1, len(scores) + 1))
    got = lowest(torch.tensor(scores), k)
    assert got.dtype == torch.bool and got.shape == (len(scores),)
    assert {i for i, v in enumerate(got.tolist()) if v} == oracle_lowest(scores, min(k, len(scores)))


def test_layer_mask_keeps_earlier_pruning_and_counts() -> None:
    score = torch.tensor([[4.0, 3.0], [2.0, 1.0]])
    current = torch.tensor([[False, True], [True, True]])  # the largest weight is already pruned
    assert layer_mask(score, current, 0.25).tolist() == [[False, True], [True, True]]
    assert layer_mask(score, current, 0.5).tolist() == [[False, True], [True, False]]
    assert layer_mask(score, current, 0.0).tolist() == [[False, True], [True, True]]
    assert layer_mask(score, torch.ones(2, 2, dtype=torch.bool), 1.0).tolist() == [[False, False], [False, False]]
    with pytest.raises(ValueError, match="sparsity"):
        layer_mask(score, current, 1.5)


def test_pruned_count_and_min_kept() -> None:
    assert pruned_count(0.5, 5) == round(2.5) == 2  # Python's rounding, half to even
    assert pruned_count(0.7, 5) == round(3.5) == 4
    assert pruned_count(1.0, 3) == 3 and pruned_count(0.0, 3) == 0
    with pytest.raises(ValueError):
        pruned_count(-0.1, 3)
    assert min_kept(10, 0.0) == 1 and min_kept(10, 0.25) == 3 and min_kept(10, 1.0) == 10


def test_global_masks_examples() -> None:
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([0.5, 0.6])}
    dense = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    out = global_masks(scores, dense, 0.5)
    assert out["a"].tolist() == [False, False, True, True]
    assert out["b"].tolist() == [False, True]  # b keeps its best weight although it ranks lowest
    out = global_masks(scores, dense, 1.0)
    assert out["a"].tolist() == [False, False, False, True] and out["b"].tolist() == [False, True]
    out = global_masks(scores, dense, 0.5, min_density=0.75)
    assert out["a"].tolist() == [False, True, True, True] and out["b"].tolist() == [True, True]
    # already pruned weights stay pruned even if the sparsity asks for less
    current = {"a": torch.tensor([True, True, True, False]), "b": torch.ones(2, dtype=torch.bool)}
    out = global_masks(scores, current, 0.0)
    assert out["a"].tolist() == [True, True, True, False] and out["b"].tolist() == [True, True]


# --------------------------------------------------------------------------------------------------
# scores the contract allows (floating, no NaN) that the mask arithmetic mishandles


def test_global_masks_with_infinite_scores_reach_the_total() -> None:
    scores = {"a": torch.tensor([1.0, math.inf, math.inf, math.inf]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    dense = {n: torch.ones(4, dtype=torch.bool) for n in scores}
    out = global_masks(scores, dense, 0.75)
    assert sum(zeros_of(m) for m in out.values()) == 6


def test_float64_scores_ranked_at_their_precision() -> None:
    score = torch.tensor([1e-50, 1e-60], dtype=torch.float64)
    assert layer_mask(score, torch.ones(2, dtype=torch.bool), 0.5).tolist() == [True, False]


# --------------------------------------------------------------------------------------------------
# the radix select against a plain sort, with chunks small enough that every chunked path runs


def _oracle_global(layers: list[list[float]], current: list[list[bool]], sparsity: float,
                   min_density: float) -> list[set[int]]:
    """Pruned indices per layer, by sorting: already pruned entries first, each layer's best
    ``min_kept`` entries protected, then the globally lowest scores, ties by position."""
    ranked: list[tuple[bool, float, int, int, int]] = []  # (protected, score, offset, layer, index)
    offset = already = protected_total = 0
    for j, (scores, mask) in enumerate(zip(layers, current, strict=True)):
        n = len(scores)
        masked = [s if keep else -math.inf for s, keep in zip(scores, mask, strict=True)]
        pruned_now = n - sum(mask)
        keep = min(min_kept(n, min_density), n - pruned_now)
        unprotected = oracle_lowest(masked, n - keep)
        protected_total += n - len(unprotected)
        already += pruned_now
        ranked += [(i not in unprotected, masked[i], offset + i, j, i) for i in range(n)]
        offset += n
    total = offset
    k = min(max(pruned_count(sparsity, total), already), total - protected_total)
    out: list[set[int]] = [set() for _ in layers]
    for _, _, _, j, i in sorted(ranked)[:k]:
        out[j].add(i)
    return out


finite_or_inf = st.floats(allow_nan=False, width=32)
layer_scores = st.lists(st.one_of(finite_or_inf, st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-45])),
                        min_size=1, max_size=30)


@given(data=st.data(), layers=st.lists(layer_scores, min_size=1, max_size=4), s=sparsities,
       min_density=st.sampled_from([0.0, 0.1, 0.5]), chunk=st.integers(1, 8), wide=st.booleans())
def test_global_masks_match_a_sort_across_chunk_boundaries(
    data: st.DataObject, layers: list[list[float]], s: float, min_density: float, chunk: int, wide: bool
) -> None:
    import sys
    from unittest import mock

    masks_module = sys.modules["squeezer.compress.selection"]
    current = [data.draw(st.lists(st.booleans(), min_size=len(x), max_size=len(x))) for x in layers]
    dtype = torch.float64 if wide else torch.float32
    scores = {f"l{j}": torch.tensor(x, dtype=dtype) for j, x in enumerate(layers)}
    # the oracle sorts the values as the tensors hold them: 1e-45 and 1.4e-45 are one float32
    layers = [scores[f"l{j}"].tolist() for j in range(len(layers))]
    dense = {f"l{j}": torch.tensor(m, dtype=torch.bool) for j, m in enumerate(current)}
    with mock.patch.object(masks_module, "CHUNK", chunk), mock.patch.object(masks_module, "_MIN_CHUNK", chunk):
        got = global_masks(scores, dense, s, min_density)
        single = layer_mask(scores["l0"], dense["l0"], s)
    expected = _oracle_global(layers, current, s, min_density)
    for j in range(len(layers)):
        assert {i for i, keep in enumerate(got[f"l{j}"].tolist()) if not keep} == expected[j], j
    k0 = max(pruned_count(s, len(layers[0])), len(layers[0]) - sum(current[0]))
    masked0 = [v if keep else -math.inf for v, keep in zip(layers[0], current[0], strict=True)]
    assert {i for i, keep in enumerate(single.tolist()) if not keep} == oracle_lowest(masked0, k0)


def test_scores_equal_in_float32_tie_by_position() -> None:
    """1e-45 and 1.4e-45 are one float32 (the smallest subnormal): a tie, broken by position, as
    the oracle above once missed when it compared the Python floats instead."""
    scores = torch.tensor([0.0] * 9 + [1.401298464324817e-45, 1.0, 1e-45])
    got = global_masks({"l0": scores}, {"l0": torch.ones(12, dtype=torch.bool)}, 10 / 12, 0.0)
    assert set(torch.nonzero(~got["l0"]).flatten().tolist()) == set(range(10))  # 9 zeros, then index 9


# --------------------------------------------------------------------------------------------------
# keep_rows: no round empties a row (output channel, unit, class) that still has a weight


def _row_protected(scores: torch.Tensor, mask: torch.Tensor, keep: int) -> set[int]:
    """Flat indices no round may prune in one layer: its ``keep`` best live entries (ties: the
    later index ranks higher, as the select breaks them), then in each live row without one of
    those its best live entry (ties: the first)."""
    flat = [s if m else -math.inf for s, m in zip(scores.reshape(-1).tolist(), mask.reshape(-1).tolist(), strict=True)]
    n = len(flat)
    protected = set(range(n)) - oracle_lowest(flat, n - keep)
    width = n // scores.shape[0]
    for r in range(scores.shape[0]):
        row = range(r * width, (r + 1) * width)
        live = [i for i in row if flat[i] > -math.inf]
        if live and not protected & set(row):
            protected.add(max(live, key=lambda i: (flat[i], -i)))
    return protected


@given(data=st.data(), n_layers=st.integers(1, 3), s=sparsities, min_density=st.sampled_from([0.0, 0.3]),
       scope=st.sampled_from(["global", "layer"]))
def test_keep_rows_empties_no_live_row_and_prunes_the_lowest_of_the_rest(
    data: st.DataObject, n_layers: int, s: float, min_density: float, scope: str
) -> None:
    row = st.tuples(st.integers(1, 5), st.integers(1, 4), st.sampled_from([1, 3]))
    shapes = [data.draw(row) for _ in range(n_layers)]
    values = st.floats(-4, 4, width=32)
    ws = [torch.tensor(data.draw(st.lists(values, min_size=math.prod(sh), max_size=math.prod(sh)))).view(sh)
          for sh in shapes]
    model = holder(*ws)
    compress.prune(model, l1_score, data.draw(st.floats(0.0, 1.0)), scope=scope)  # some rows may be empty already
    before = list(m.clone() for m in compress.masks(model).values())
    compress.prune(model, l1_score, s, scope=scope, min_density=min_density, keep_rows=True)
    after = list(compress.masks(model).values())
    for j, (old, new, w) in enumerate(zip(before, after, ws, strict=True)):
        assert bool((new <= old).all()), f"layer {j}: revived"
        rows_alive_before = old.reshape(w.shape[0], -1).any(dim=1)
        assert bool(new.reshape(w.shape[0], -1).any(dim=1)[rows_alive_before].all()), f"layer {j}: a live row emptied"
    if scope == "global":  # the count the protected entries allow, and the lowest of the rest go
        protected = [_row_protected(w.abs(), old, min(min_kept(w.numel(), min_density), int(old.sum())))
                     for w, old in zip(ws, before, strict=True)]
        total = sum(w.numel() for w in ws)
        already = sum(zeros_of(m) for m in before)
        assert sum(zeros_of(m) for m in after) == min(max(round(s * total), already),
                                                       total - sum(len(p) for p in protected))
        pruned_new, kept_free = [], []
        for w, old, new, prot in zip(ws, before, after, protected, strict=True):
            for i, (score, was, now) in enumerate(zip(w.abs().reshape(-1).tolist(), old.reshape(-1).tolist(),
                                                      new.reshape(-1).tolist(), strict=True)):
                if was and not now:
                    pruned_new.append(score)
                elif now and i not in prot:
                    kept_free.append(score)
        assert not pruned_new or not kept_free or max(pruned_new) <= min(kept_free)


def test_keep_rows_keeps_a_layer_of_small_rows_alive() -> None:
    """Global L1 empties the rows of a layer whose weights are all small (a depthwise convolution
    next to a wide one); ``keep_rows`` keeps each row's largest weight and prunes elsewhere instead."""
    big = torch.arange(1.0, 65.0).view(8, 8)
    small = torch.full((4, 1, 3, 3), 0.01) + torch.arange(36.0).view(4, 1, 3, 3) * 1e-4
    for keep_rows, empty in ((False, 3), (True, 0)):  # without: only the layer's one kept weight
        model = holder(big, small)
        layers = compress.prune(model, l1_score, 0.6, keep_rows=keep_rows)
        assert layers[1].empty_rows == empty
        assert sum(layer.zeros for layer in layers) == round(0.6 * 100)
    masks = compress.masks(model)
    assert masks["layers.1.weight"].reshape(4, -1).sum(dim=1).tolist() == [1, 1, 1, 1]
    assert masks["layers.1.weight"].reshape(4, -1)[:, -1].all()  # each row's largest entry


def test_a_round_short_of_its_target_says_why() -> None:
    """``keep_rows`` on a layer of more rows than the target leaves weights: the round keeps one
    weight per row, lands short of the target, and the pruner says so, naming the settings."""
    from squeezer.engine import Pruner

    model = holder(torch.randn(10, 2))
    said: list[str] = []
    pruner = Pruner(model=model, registry=REGISTRY, importance=L1, importance_name="l1", schedule=[0.9],
                    warn=said.append)
    layers, _ = pruner.round()
    assert layers[0].zeros == 10 and layers[0].empty_rows == 0
    assert len(said) == 1 and "sparsity 50.00% of the target 90.00%" in said[0] and "keep_rows" in said[0]
