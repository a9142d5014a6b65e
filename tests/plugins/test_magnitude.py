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
