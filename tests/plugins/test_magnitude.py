"""Built-in magnitude criteria."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

import squeezer
from squeezer.testing.conformance import weight_tensors

REGISTRY = squeezer.load_registry(autoload=False)


@given(w=weight_tensors())
def test_l1_is_abs_float32(w: torch.Tensor) -> None:
    score = REGISTRY.create("importance", "l1")(w)
    assert score.dtype == torch.float32 and score.shape == w.shape
    assert torch.equal(score, w.float().abs())


@given(w=weight_tensors())
def test_l2_is_square_float32(w: torch.Tensor) -> None:
    score = REGISTRY.create("importance", "l2")(w)
    assert score.dtype == torch.float32 and score.shape == w.shape
    assert torch.equal(score, w.float() * w.float())


def test_no_gradients_needed_and_no_graph() -> None:
    w = torch.randn(3, 4, requires_grad=True)
    for name in ("l1", "l2"):
        imp = REGISTRY.create("importance", name)
        assert imp.needs_gradients is False
        s = imp(w, None)
        assert not s.requires_grad
    assert REGISTRY.get("importance", "l1").help.startswith("L1 magnitude")


def test_l1_and_l2_rank_alike() -> None:
    w = torch.tensor([-3.0, 0.5, 2.0, -0.1])
    l1 = REGISTRY.create("importance", "l1")(w)
    l2 = REGISTRY.create("importance", "l2")(w)
    assert torch.equal(l1.argsort(), l2.argsort())
    assert l1.tolist() == pytest.approx([3.0, 0.5, 2.0, 0.1])


def _lamp_reference(w: torch.Tensor) -> torch.Tensor:
    """LAMP straight from its definition, one weight at a time (ties: the stable ascending order)."""
    flat = w.reshape(-1).double()
    order = sorted(range(flat.numel()), key=lambda i: (float(flat[i].abs()), i))
    rank = {idx: r for r, idx in enumerate(order)}
    out = torch.empty_like(flat)
    for i in range(flat.numel()):
        mass = sum(float(flat[j]) ** 2 for j in order[rank[i]:])
        out[i] = float(flat[i]) ** 2 / mass if mass > 0 else 0.0
    return out.view(w.shape).float()


@given(w=weight_tensors(max_side=5))
def test_lamp_matches_its_definition(w: torch.Tensor) -> None:
    score = REGISTRY.create("importance", "lamp")(w)
    assert score.dtype == torch.float32 and score.shape == w.shape
    torch.testing.assert_close(score, _lamp_reference(w), rtol=1e-5, atol=1e-30)


def test_lamp_is_scale_invariant_and_keeps_the_largest_weight_at_one() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 7)
    lamp = REGISTRY.create("importance", "lamp")
    torch.testing.assert_close(lamp(w), lamp(w * 1e-3))
    assert float(lamp(w).max()) == 1.0
    # ranking within a layer is the magnitude ranking
    assert torch.equal(lamp(w).flatten().argsort(stable=True), w.abs().flatten().argsort(stable=True))


def test_global_lamp_does_not_collapse_a_rescaled_layer() -> None:
    from torch import nn

    from squeezer import compress

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32))
    with torch.no_grad():
        model[1].weight.mul_(1e-3)  # as if a normalization layer made its scale irrelevant
    compress.attach(model)
    lamp = REGISTRY.create("importance", "lamp")
    compress.prune(model, lambda _p, w: lamp(w), 0.9)
    kept = [int(p.mask.sum()) for _, p in compress.compressed_weights(model)]
    assert min(kept) > 0.05 * 1024, kept  # l1 would keep only the minimum in the small layer
