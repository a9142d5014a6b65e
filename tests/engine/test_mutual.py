"""The engine's Phase 2 loss against its defining formula (deep mutual learning, Zhang et al. 2018;
PQK's Phase 2): L = CE(s, y) + w KD(s, sg(t)) + CE(t, y) + w KD(t, sg(s))."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from squeezer.engine import mutual_loss
from squeezer.engine.task import RunTask
from squeezer.plugin_manager import load_registry

REGISTRY = load_registry()
CLASSIFICATION = RunTask.create(REGISTRY, "classification")
LANGUAGE_MODEL = RunTask.create(REGISTRY, "language_model")


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
    loss, parts = mutual_loss(s, tt, y, kd, weight, task=CLASSIFICATION)
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


@given(seed=st.integers(0, 2**16), weight=st.sampled_from([0.0, 1.0]))
def test_token_level_mutual_loss_shifts_and_reduces_over_predicted_tokens(seed: int, weight: float) -> None:
    """A language model: the logits at position i predict token i + 1, padding (-100) is left
    out, and KD compares the two networks' next-token distributions at the same positions."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, 5, 7, generator=g, requires_grad=True)
    tt = torch.randn(2, 5, 7, generator=g, requires_grad=True)
    y = torch.randint(0, 7, (2, 5), generator=g)
    y[1, 3:] = -100  # padding
    kd = hinton(4.0)
    loss, _ = mutual_loss(s, tt, y, kd, weight, task=LANGUAGE_MODEL)
    rows_s = torch.cat([s[0, :4], s[1, :2]])  # positions whose next token is not padding
    rows_t = torch.cat([tt[0, :4], tt[1, :2]])
    labels = torch.cat([y[0, 1:], y[1, 1:3]])
    ce = nn.functional.cross_entropy
    expected = ce(rows_s, labels) + ce(rows_t, labels)
    if weight:
        expected = expected + weight * (kd(rows_s, rows_t.detach()) + kd(rows_t, rows_s.detach()))
    torch.testing.assert_close(loss, expected)


@given(seed=st.integers(0, 2**16), weight=st.sampled_from([0.5, 1.0]), shift=st.floats(-2.0, 2.0))
def test_the_student_distills_only_from_a_leading_teacher(seed: int, weight: float, shift: float) -> None:
    """``when_teacher_leads``: L = CE(s) + [CE(t) < CE(s)] w KD(s, sg(t)) + CE(t) + w KD(t, sg(s)); the
    teacher's own terms never change, so it keeps learning from the student."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(6, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (6,), generator=g)
    # the teacher's logits moved towards (shift > 0) or away from the labels: either can lead
    tt = (torch.randn(6, 5, generator=g) + shift * nn.functional.one_hot(y, 5)).requires_grad_()
    kd, ce = hinton(4.0), nn.functional.cross_entropy
    loss, parts = mutual_loss(s, tt, y, kd, weight, task=CLASSIFICATION, student_distills="when_teacher_leads")
    leads = float(ce(tt, y)) < float(ce(s, y))
    assert parts["student_kd_on"] == float(leads)
    expected = ce(s, y) + ce(tt, y) + weight * kd(tt, s.detach()) + (weight * kd(s, tt.detach()) if leads else 0.0)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    own_s = ce(s, y) + (weight * kd(s, tt.detach()) if leads else 0.0)
    torch.testing.assert_close(s.grad, torch.autograd.grad(own_s, s)[0])
    torch.testing.assert_close(tt.grad, torch.autograd.grad(ce(tt, y) + weight * kd(tt, s.detach()), tt)[0])


def test_an_unknown_student_distills_is_refused() -> None:
    import pytest

    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="student_distills"):
        mutual_loss(x, x, torch.zeros(2, dtype=torch.long), hinton(1.0), 1.0, task=CLASSIFICATION,
                    student_distills="sometimes")
