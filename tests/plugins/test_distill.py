"""Built-in distillation losses, checked against independent formulas."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import squeezer
from squeezer.testing.conformance import logit_pairs

REGISTRY = squeezer.load_registry(autoload=False)
temperatures = st.sampled_from([0.5, 1.0, 2.0, 4.0, 10.0])


def reference_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> float:
    """T^2 * mean over the batch of sum_c p_t log(p_t / p_s), in float64 with plain Python math."""
    total = 0.0
    for srow, trow in zip(s.double().tolist(), t.double().tolist(), strict=True):
        def softmax(row: list[float]) -> list[float]:
            m = max(row)
            e = [math.exp((v - m) / temperature) for v in row]
            z = sum(e)
            return [v / z for v in e]

        ps, pt = softmax(srow), softmax(trow)
        total += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt, strict=True) if b > 0)
    return temperature**2 * total / len(s)


@given(pair=logit_pairs(), temperature=temperatures)
def test_hinton_equals_reference(pair: tuple[torch.Tensor, torch.Tensor], temperature: float) -> None:
    s, t = pair
    loss = REGISTRY.create("distillation_loss", "hinton", {"temperature": temperature})(s, t)
    assert loss.dim() == 0
    expected = reference_kd(s, t, temperature)
    # float32 log-softmax differences carry ~1e-7 absolute noise per class, times T^2
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=3e-6 * temperature**2)
    exact = REGISTRY.create("distillation_loss", "hinton", {"temperature": temperature})(s.double(), t.double())
    assert exact.item() == pytest.approx(expected, rel=1e-8, abs=1e-13 * temperature**2)


@given(pair=logit_pairs(), temperature=temperatures)
def test_hinton_zero_for_identical_logits(pair: tuple[torch.Tensor, torch.Tensor], temperature: float) -> None:
    s, _ = pair
    loss = REGISTRY.create("distillation_loss", "hinton", {"temperature": temperature})(s, s.clone())
    assert abs(loss.item()) < 1e-5


@given(pair=logit_pairs(), temperature=temperatures)
def test_hinton_gradient_has_the_t_squared_scaling(
    pair: tuple[torch.Tensor, torch.Tensor], temperature: float
) -> None:
    # d/ds [T^2 KL(p_t || p_s)] = T^2 * (p_s - p_t) / (T * N) = T * (p_s - p_t) / N
    s, t = pair
    student = s.clone().requires_grad_(True)
    REGISTRY.create("distillation_loss", "hinton", {"temperature": temperature})(student, t).backward()
    expected = temperature * (torch.softmax(s / temperature, -1) - torch.softmax(t / temperature, -1)) / len(s)
    assert student.grad is not None
    torch.testing.assert_close(student.grad, expected, rtol=1e-4, atol=1e-6)


def test_hinton_t_squared_keeps_gradient_magnitudes_comparable() -> None:
    # Without T^2 the soft-target gradient shrinks as 1/T^2 for large T; with it, it stays O(1):
    # for small logits the gradient is ~ (s - t) / (C * N) at any large T.
    torch.manual_seed(0)
    s, t = torch.randn(4, 5) * 0.1, torch.randn(4, 5) * 0.1
    grads = []
    for temperature in (10.0, 20.0, 40.0):
        student = s.clone().requires_grad_(True)
        REGISTRY.create("distillation_loss", "hinton", {"temperature": temperature})(student, t).backward()
        assert student.grad is not None
        grads.append(student.grad.norm().item())
    assert grads[0] == pytest.approx(grads[1], rel=0.02) == pytest.approx(grads[2], rel=0.02)
    centered = (s - t) - (s - t).mean(-1, keepdim=True)
    assert grads[2] == pytest.approx((centered / (5 * 4)).norm().item(), rel=0.02)


@pytest.mark.parametrize("name", ["hinton", "mse"])
@given(pair=logit_pairs(), lr=st.sampled_from([1e-2, 0.1, 0.5]))
def test_one_sgd_step_moves_student_toward_teacher(
    name: str, pair: tuple[torch.Tensor, torch.Tensor], lr: float
) -> None:
    s, t = (x.double() for x in pair)  # float32 KL has absolute noise ~1e-7 * T^2, above tiny steps
    loss_fn = REGISTRY.create("distillation_loss", name)
    student = s.clone().requires_grad_(True)
    before = loss_fn(student, t)
    before.backward()
    assert student.grad is not None
    with torch.no_grad():
        # both losses have curvature <= 1 in the student's logits, so a step below 1 descends
        stepped = student - lr * student.grad
        after = loss_fn(stepped, t)
    assert after.item() <= before.item() + 1e-12


@given(pair=logit_pairs())
def test_mse_is_mean_squared_difference(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    s, t = pair
    loss = REGISTRY.create("distillation_loss", "mse")(s, t)
    diffs = [(a - b) ** 2 for ra, rb in zip(s.tolist(), t.tolist(), strict=True) for a, b in zip(ra, rb, strict=True)]
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(sum(diffs) / len(diffs), rel=1e-5, abs=1e-7)
    assert REGISTRY.create("distillation_loss", "mse")(s, s.clone()).item() == 0.0


def test_teacher_receives_no_gradient_when_detached() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    for name in ("hinton", "mse"):
        REGISTRY.create("distillation_loss", name)(s, t.detach()).backward()
    assert t.grad is None and s.grad is not None
