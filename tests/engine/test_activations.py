"""The engine's LSQ activation quantizers: the grid, the gradients against LSQ's formulas, the
calibration (step and signedness), the per-layer overrides, the teacher's switch, exact reload."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from squeezer import compress
from squeezer.compress.teacher import SelfTeacher
from squeezer.engine.activations import (
    CHILD_NAME,
    LsqActivationQuantizer,
    activation_quantizers,
    attach_activations,
    choose_activations,
    restore_from_state,
)
from squeezer.errors import ConfigError
from squeezer.recipe.configs import ActivationOverride, Activations


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def compressed() -> nn.Sequential:
    model = mlp()
    compress.attach(model)
    compress.prune(model, lambda p, w: w.abs(), 0.5)
    return model


@pytest.mark.parametrize(("bits", "signed"), [(8, False), (4, True), (2, False)])
def test_forward_and_gradients_follow_lsq(bits: int, signed: bool) -> None:
    q = LsqActivationQuantizer(bits=bits, signed=signed, step=0.1)
    qn, qp = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    assert (q.qn, q.qp) == (qn, qp)
    v = (torch.randn(5, 7) * 0.1 * qp).requires_grad_(True)
    out = q(v)
    s = 0.1
    k = torch.clamp(v.detach() / s, -qn, qp)
    assert torch.allclose(out, k.round() * s)  # round(clip(v / s, -Qn, Qp)) * s
    assert torch.allclose(out / s, (out / s).round(), atol=1e-5)
    upstream = torch.randn_like(v)
    out.backward(upstream)
    x = v.detach() / s
    inside = (x >= -qn) & (x <= qp)
    # dL/dv: straight through inside the range, 0 where clipped
    assert torch.allclose(v.grad, torch.where(inside, upstream, torch.zeros_like(upstream)), atol=1e-6)
    # dL/ds: LSQ's closed form, scaled by g = 1 / sqrt(N * Qp), N the elements of one sample
    ds = torch.where(inside, x.round() - x, torch.where(x < -qn, torch.tensor(-float(qn)), torch.tensor(float(qp))))
    g = 1 / math.sqrt(7 * qp)
    assert q.step.grad is not None
    assert float(q.step.grad) == pytest.approx(float((upstream * ds).sum()) * g, rel=1e-4, abs=1e-6)


def test_uncalibrated_step_initializes_from_the_first_batch_and_loads_exactly() -> None:
    q = LsqActivationQuantizer(bits=8)
    x = torch.rand(16, 4)
    q(x)
    assert bool(q.initialized) and float(q.step.detach()) == pytest.approx(2 * float(x.abs().mean()) / math.sqrt(255))
    fresh = LsqActivationQuantizer(bits=8)
    fresh.load_state_dict(q.state_dict())
    assert float(fresh.step) == float(q.step) and torch.equal(fresh(x * 3), q(x * 3))
    with pytest.raises(ValueError, match=r"bits must be in 2\.\.8, got 9"):
        LsqActivationQuantizer(bits=9)


def test_calibration_sets_steps_and_signedness_on_the_compressed_layers() -> None:
    model = compressed()
    batches = [torch.randn(32, 6) for _ in range(3)]
    seen: dict[str, list[torch.Tensor]] = {"0": [], "2": [], "4": []}
    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen[n].append(a[0])) for n in seen]

    def run(n: int):
        for x in batches[:n]:
            model(x)
            yield None

    model.train()
    chosen = attach_activations(model, Activations(bits=8, calibration_batches=2), run, "stages[1].activations")
    for h in hooks:
        h.remove()
    assert model.training  # calibration ran in eval mode and restored the mode
    assert chosen == {"0": (8, True), "2": (8, False), "4": (8, False)}  # raw input signed, ReLU outputs not
    for name, q in activation_quantizers(model).items():
        xs = torch.cat(seen[name][:2])
        expected = 2 * float(xs.abs().mean()) / math.sqrt(q.qp)
        assert float(q.step) == pytest.approx(expected, rel=1e-5) and bool(q.initialized)
    assert any(n.endswith(f"{CHILD_NAME}.step") for n, _ in model.named_parameters())


def test_overrides_first_match_wins_and_errors_name_the_field() -> None:
    model = compressed()
    choice = Activations(bits=8, overrides=(
        ActivationOverride(pattern="@first", skip=True),
        ActivationOverride(pattern="4", bits=4, signed=True),
        ActivationOverride(pattern="*", bits=2),
    ))
    assert choose_activations(model, choice, "a") == {"2": (2, None), "4": (4, True)}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.activations: the model has no compressed layers"):
        choose_activations(mlp(), choice, "stages[0].activations")


def test_restore_from_state_rebuilds_the_quantizers_of_a_state_dict() -> None:
    model = compressed()
    attach_activations(model, Activations(), lambda n: (model(torch.randn(8, 6)) for _ in range(n)), "a")
    state = model.state_dict()
    fresh = compressed()
    assert sorted(restore_from_state(fresh, state)) == ["0", "2", "4"]
    fresh.load_state_dict(state)
    x = torch.randn(4, 6)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


@pytest.mark.parametrize("quantized", [True, False])
def test_the_teacher_option_decides_whether_the_teacher_sees_quantized_inputs(quantized: bool) -> None:
    model = compressed()
    attach_activations(model, Activations(bits=2), lambda n: (model(torch.randn(8, 6)) for _ in range(n)), "a")
    compress.attach_quantizers(model, lambda p: None)
    teacher = SelfTeacher(model, quantized=quantized).eval()
    model.eval()
    x = torch.randn(16, 6)
    seen: list[torch.Tensor] = []
    handle = model.get_submodule("2").register_forward_pre_hook(lambda m, a: seen.append(a[0]), prepend=False)
    with torch.no_grad():
        teacher(x)
    handle.remove()
    q = model.get_submodule("2").input_quantizer
    on_grid = torch.allclose(seen[0] / q.step, (seen[0] / q.step).round(), atol=1e-4)
    assert on_grid == quantized
    assert q.enabled  # the student's quantizers are on again
