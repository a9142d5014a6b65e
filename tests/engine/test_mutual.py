"""The engine's Phase 2 loss against its defining formula (deep mutual learning, Zhang et al. 2018;
PQK's Phase 2): L = CE(s, y) + w KD(s, sg(t)) + CE(t, y) + w KD(t, sg(s))."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from squeezer.engine import mutual_loss


def hinton(t: float):  # type: ignore[no-untyped-def]
    def kd(s: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.kl_div(torch.log_softmax(s / t, -1), torch.softmax(target / t, -1),
                                    reduction="batchmean") * t * t
    return kd


@given(seed=st.integers(0, 2**16), weight=st.sampled_from([0.0, 0.5, 1.0, 3.0]), t=st.sampled_from([1.0, 4.0]))
def test_mutual_loss_is_the_formula(seed: int, weight: float, t: float) -> None:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(6, 5, generator=g, requires_grad=True)
    tt = torch.randn(6, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (6,), generator=g)
    kd = hinton(t)
    loss, parts = mutual_loss(s, tt, y, kd, weight)
    ce = nn.functional.cross_entropy
    expected = ce(s, y) + ce(tt, y)
    if weight:
        expected = expected + weight * (kd(s, tt.detach()) + kd(tt, s.detach()))
    torch.testing.assert_close(loss, expected)
    assert parts["student_ce"] == float(ce(s, y).detach())
    assert ("student_kd" in parts) == bool(weight)
    # the targets are detached: the student's gradient comes only from its own terms
    loss.backward()
    own = ce(s, y) + (weight * kd(s, tt.detach()) if weight else 0.0)
    torch.testing.assert_close(s.grad, torch.autograd.grad(own, s)[0])
