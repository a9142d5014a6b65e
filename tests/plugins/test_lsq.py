"""The built-in ``lsq`` plugin: LSQ and min-max fake quantizers, their config, and core integration."""

from __future__ import annotations

import io
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

import squeezer
from squeezer.strategies import FakeQuantizer, Quantizer
from squeezer_lsq.activations import (
    LsqActivationQuantizer,
    attach_activation_quantizers,
    remove_activation_quantizers,
)
from squeezer_lsq.config import LsqQuantizer, MinMaxQuantizer, grid_limits
from squeezer_lsq.modules import (
    _FLOORS,
    LsqFakeQuantizer,
    MinMaxFakeQuantizer,
    _LsqFakeQuantize,
    fake_quantize,
    lsq_step,
)

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
bits_st = st.integers(2, 8)


def make_weight(shape: tuple[int, ...], seed: int, sparsity: float, scale: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen) * scale
    keep = torch.rand(shape, generator=gen) >= sparsity
    return torch.where(keep, w, torch.zeros(()))


weights = st.builds(
    make_weight,
    shapes,
    st.integers(0, 2**31 - 1),
    st.sampled_from([0.0, 0.5, 0.95]),
    st.sampled_from([1e-3, 0.05, 1.0, 30.0]),
)


def channel_view(t: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Rows = elements sharing one step."""
    return t.reshape(t.shape[0], -1) if per_channel else t.reshape(1, -1)


def check_on_grid(fq: nn.Module, w: torch.Tensor, out: torch.Tensor, per_channel: bool) -> None:
    qn, qp = fq.qn, fq.qp
    assert out.shape == w.shape and out.dtype == w.dtype
    codes, scale = fq.quantize(w)
    assert codes.dtype in (torch.int8, torch.int16) and not codes.is_floating_point()
    assert int(codes.min()) >= -qn and int(codes.max()) <= qp
    assert torch.equal(codes * scale, out)  # bitwise
    # independently of quantize(): out / scale is an integer in [-Qn, Qp]
    k = (out / scale).double()
    assert torch.allclose(k, k.round(), atol=1e-3)
    assert float(k.min()) >= -qn - 1e-3 and float(k.max()) <= qp + 1e-3
    # at most 2**bits levels per step
    rows = channel_view(codes, per_channel and w.dim() >= 1)
    for row in rows:
        assert row.unique().numel() <= 2**fq.bits
    # zeros stay zero (masked weights stay pruned)
    assert bool((out[w == 0] == 0).all())


# ---------------------------------------------------------------------------------------------
# LSQ: forward properties


@given(
    w=weights,
    bits=bits_st,
    per_channel=st.booleans(),
    signed=st.booleans(),
    factor=st.sampled_from([1.0, 0.1, 3.0]),
)
def test_lsq_output_on_grid(w, bits, per_channel, signed, factor):
    fq = LsqQuantizer(bits=bits, per_channel=per_channel, signed=signed).build(w)
    assert isinstance(fq, LsqFakeQuantizer)
    with torch.no_grad():
        fq.step.mul_(factor)  # a trained step: exercises clipping on both sides
        out = fq(w)
    expected_shape = (w.shape[0],) + (1,) * (w.dim() - 1) if per_channel else ()
    assert tuple(fq.step.shape) == expected_shape
    assert bool((fq.step > 0).all())
    check_on_grid(fq, w, out, per_channel)
    # the STE tricks leave the forward value exactly round(clip(w / s)) * s
    qn, qp = grid_limits(bits, signed)
    s = fq.step.detach()
    assert torch.equal(out, torch.clamp(w / s, -qn, qp).round() * s)
    with torch.no_grad():
        assert torch.equal(fq(out), out)  # idempotent, exactly
        zeros = torch.zeros_like(w)
        assert torch.equal(fq(zeros), zeros)


def test_lsq_zero_dim_and_low_precision_dtypes():
    scalar = torch.tensor(0.3)
    fq = LsqQuantizer(per_channel=True).build(scalar)
    assert fq.step.shape == () and fq(scalar).shape == ()
    w = torch.randn(6, 5).to(torch.bfloat16)
    fq = LsqQuantizer(bits=3).build(w)
    out = fq(w)
    assert out.dtype == torch.bfloat16
    codes, scale = fq.quantize(w)
    assert torch.equal(codes * scale, out)


def test_lsq_step_floor_keeps_division_finite_and_gradient_flowing():
    w = torch.randn(3, 4)
    fq = LsqQuantizer(per_channel=False).build(w)
    with torch.no_grad():
        fq.step.fill_(-1.0)  # an optimizer overshoot
    out = fq(w)
    assert bool(torch.isfinite(out).all())
    out.sum().backward()
    assert fq.step.grad is not None and float(fq.step.grad.abs()) > 0


# ---------------------------------------------------------------------------------------------
# LSQ: gradients against the paper's closed form


def closed_form_step_grad(
    w: np.ndarray, s: np.ndarray, up: np.ndarray, qn: int, qp: int, g: float, per_channel: bool
):
    x = (w / s).astype(np.float32)
    term = np.where(x <= -qn, -float(qn), np.where(x >= qp, float(qp), np.round(x) - x))
    contrib = term.astype(np.float64) * up
    if per_channel:
        grad = contrib.reshape(w.shape[0], -1).sum(1).reshape(s.shape)
        mag = np.abs(contrib).reshape(w.shape[0], -1).sum(1).reshape(s.shape)
    else:
        grad, mag = contrib.sum(), np.abs(contrib).sum()
    return grad * g, mag * g, x


@given(
    w=weights,
    bits=bits_st,
    per_channel=st.booleans(),
    signed=st.booleans(),
    factor=st.sampled_from([1.0, 0.1, 3.0]),
    seed=st.integers(0, 1000),
)
def test_lsq_gradients_match_closed_form(w, bits, per_channel, signed, factor, seed):
    w = w.clone().requires_grad_(True)
    fq = LsqFakeQuantizer(w.detach(), bits=bits, signed=signed, per_channel=per_channel)
    with torch.no_grad():
        fq.step.mul_(factor)
    qn, qp = grid_limits(bits, signed)
    s = fq.step.detach().numpy()
    x = w.detach().numpy() / s
    # at an exact tie v/s == -Qn or Qp the subgradient convention is torch.clamp's, not the paper's
    assume(not np.any(x == -qn) and not np.any(x == qp))
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed))
    (fq(w) * up).sum().backward()

    n = w.numel() // w.shape[0] if per_channel else w.numel()
    g = 1.0 / math.sqrt(n * qp)
    assert fq.grad_scale == pytest.approx(g, rel=1e-12)
    expected, mag, x32 = closed_form_step_grad(w.detach().numpy(), s, up.numpy(), qn, qp, g, per_channel)
    got = fq.step.grad.double().numpy()
    assert got.shape == np.shape(expected)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-5 * (np.max(mag) + 1e-12) + 1e-12)

    inside = (x32 > -qn) & (x32 < qp)
    expected_w = np.where(inside, up.numpy(), 0.0)
    assert np.allclose(w.grad.numpy(), expected_w, rtol=1e-5, atol=1e-6)
    assert np.all(w.grad.numpy()[~inside] == 0)


def test_grad_scale_uses_elements_per_step():
    w = torch.randn(4, 3, 2, 2)
    assert LsqFakeQuantizer(w, bits=4, per_channel=False).grad_scale == pytest.approx(1 / math.sqrt(48 * 7))
    assert LsqFakeQuantizer(w, bits=4, per_channel=True).grad_scale == pytest.approx(1 / math.sqrt(12 * 7))
    assert LsqFakeQuantizer(w, bits=4, signed=False).grad_scale == pytest.approx(1 / math.sqrt(12 * 15))


# ---------------------------------------------------------------------------------------------
# LSQ: initialization and state_dict


def test_init_uses_mean_of_nonzero_entries():
    w = torch.tensor([[0.0, 0.0, 2.0, -4.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    qp = 7
    nonzero_mean = (2 + 4 + 1) / 3
    per_tensor = LsqFakeQuantizer(w, bits=4, per_channel=False)
    assert float(per_tensor.step.detach()) == pytest.approx(2 * nonzero_mean / math.sqrt(qp))
    per_channel = LsqFakeQuantizer(w, bits=4, per_channel=True)
    expected = [2 * 3.0 / math.sqrt(qp), 2 * 1.0 / math.sqrt(qp), 2 * nonzero_mean / math.sqrt(qp)]
    assert per_channel.step.shape == (3, 1)
    assert per_channel.step.flatten().tolist() == pytest.approx(expected)  # all-zero row: tensor value
    # a 95 %-sparse weight gets the step of its kept entries, not one ~20x smaller
    dense = torch.randn(10, 100)
    sparse = torch.where(torch.rand(10, 100) < 0.05, dense, torch.zeros(()))
    kept = sparse[sparse != 0].abs().mean()
    assert float(LsqFakeQuantizer(sparse, per_channel=False).step.detach()) == pytest.approx(
        float(2 * kept / math.sqrt(7))
    )


def test_all_zero_weight_gets_a_positive_step():
    w = torch.zeros(3, 4)
    fq = LsqFakeQuantizer(w)
    assert bool((fq.step > 0).all()) and bool(torch.isfinite(fq.step).all())
    assert torch.equal(fq(w), w)


def test_state_dict_carries_bits_signedness_and_step():
    w = torch.randn(5, 3)
    source = LsqQuantizer(bits=3, signed=False, per_channel=True).build(w)
    with torch.no_grad():
        source.step.mul_(1.7)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    fresh = LsqQuantizer(bits=8, signed=True, per_channel=True).build(torch.randn(5, 3))
    fresh.load_state_dict(state)
    assert (fresh.bits, fresh.qn, fresh.qp, fresh.signed) == (3, 0, 7, False)
    assert fresh.grad_scale == pytest.approx(1 / math.sqrt(3 * 7))
    assert torch.equal(fresh.step, source.step)
    assert torch.equal(fresh(w), source(w))
    assert all(torch.equal(a, b) for a, b in zip(fresh.quantize(w), source.quantize(w), strict=True))


def test_inconsistent_state_dict_is_rejected():
    fq = LsqFakeQuantizer(torch.randn(2, 2), bits=4)
    state = fq.state_dict()
    state["q_pos"] = torch.tensor(100)
    with pytest.raises(RuntimeError, match="inconsistent quantizer grid"):
        fq.load_state_dict(state)
    assert (fq.bits, fq.qn, fq.qp) == (4, 8, 7)


# ---------------------------------------------------------------------------------------------
# config and registration


def test_plugin_registers_lsq_and_minmax():
    registry = squeezer.load_registry(autoload=False)
    info = registry.get("quantizer", "lsq")
    assert info.cls is LsqQuantizer and info.plugin == "lsq"
    assert registry.get("quantizer", "minmax").cls is MinMaxQuantizer
    config = registry.create("quantizer", "lsq", {"bits": 4})
    assert config == LsqQuantizer(bits=4, per_channel=True, signed=True)
    assert isinstance(config, Quantizer)
    assert isinstance(config.build(torch.randn(3, 3)), FakeQuantizer)
    assert isinstance(registry.create("quantizer", "minmax").build(torch.randn(3, 3)), FakeQuantizer)
    assert all(a.metadata.get("help") for a in info.options())
    assert {a.name for a in info.options()} == {"bits", "per_channel", "signed", "log_step"}


@pytest.mark.parametrize("name", ["lsq", "minmax"])
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"bits": 1}, "bits"),
        ({"bits": 9}, "bits"),
        ({"bits": 4.0}, "bits"),
        ({"bits": True}, "bits"),
        ({"per_channel": "yes"}, "per_channel"),
        ({"signed": 1}, "signed"),
    ],
)
def test_bad_options_raise_config_error_naming_the_field(name, options, field):
    registry = squeezer.load_registry(autoload=False)
    with pytest.raises(squeezer.ConfigError, match=field) as info:
        registry.create("quantizer", name, options)
    if options.get("bits") == 1 and options["bits"] is not True:
        assert str(info.value) == f"quantizer {name!r}: bits must be in 2..8, got 1"


def test_bad_bits_raise_value_error_directly():
    with pytest.raises(ValueError, match=r"bits must be in 2\.\.8"):
        LsqQuantizer(bits=12)
    with pytest.raises(ValueError, match="bits"):
        LsqFakeQuantizer(torch.ones(2), bits=1)


def test_loading_the_plugin_does_not_import_torch():
    code = (
        "import sys, squeezer, squeezer_lsq, squeezer_lsq.config\n"
        "squeezer.load_registry(autoload=False)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# integration with the core


def small_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.mark.parametrize("options", [{"bits": 4}, {"bits": 3, "per_channel": False}, {"bits": 8}])
@pytest.mark.parametrize("name", ["lsq", "minmax"])
def test_core_integration_grid_and_pruned_zeros(name, options):
    registry = squeezer.load_registry(autoload=False)
    config = registry.create("quantizer", name, options)
    model = small_model()
    squeezer.compress.attach(model)
    squeezer.compress.prune(model, lambda p, w: w.abs(), 0.5)
    bits = squeezer.compress.attach_quantizers(model, lambda path: (name, config))
    assert bits and set(bits.values()) == {options["bits"]}

    x = torch.randn(32, 8)
    model(x).square().mean().backward()
    compressed = dict(squeezer.compress.compressed_weights(model))
    for path, p in compressed.items():
        module, attr = model.get_submodule(path.rsplit(".", 1)[0]), path.rsplit(".", 1)[1]
        weight = getattr(module, attr)
        masked = torch.where(p.mask, squeezer.compress.original(model, path), torch.zeros(()))
        assert p.quantizer is not None
        check_on_grid(p.quantizer, masked.detach(), weight.detach(), config.per_channel)
        assert bool((weight[~p.mask] == 0).all())
        grad = squeezer.compress.original(model, path).grad
        assert grad is not None and bool((grad[~p.mask] == 0).all())
        assert bool(grad[p.mask].abs().sum() > 0)
        if name == "lsq":
            assert p.quantizer.step.grad is not None and bool(torch.isfinite(p.quantizer.step.grad).all())


def test_spec_restore_and_state_dict_round_trip():
    registry = squeezer.load_registry(autoload=False)
    model = small_model()
    squeezer.compress.attach(model)
    squeezer.compress.prune(model, lambda p, w: w.abs(), 0.7)
    config = registry.create("quantizer", "lsq", {"bits": 3, "signed": True})
    squeezer.compress.attach_quantizers(model, lambda path: ("lsq", config))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 8)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()

    structure = squeezer.compress.spec(model)
    fresh = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    squeezer.compress.restore(fresh, structure, registry)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


# ---------------------------------------------------------------------------------------------
# min-max baseline


@given(w=weights, bits=bits_st, per_channel=st.booleans(), signed=st.booleans())
def test_minmax_output_on_grid(w, bits, per_channel, signed):
    fq = MinMaxQuantizer(bits=bits, per_channel=per_channel, signed=signed).build(w)
    assert isinstance(fq, MinMaxFakeQuantizer)
    out = fq(w)
    check_on_grid(fq, w, out, per_channel)
    zeros = torch.zeros_like(w)
    assert torch.equal(fq(zeros), zeros)
    # the largest value of each row maps to the top of the grid
    _, qp = grid_limits(bits, signed)
    rows_w = channel_view(w if signed else w.clamp_min(0), per_channel).abs()
    codes, _ = fq.quantize(w)
    rows_c = channel_view(codes, per_channel).abs()
    for rw, rc in zip(rows_w, rows_c, strict=True):
        if float(rw.max()) > 0:
            assert int(rc[rw.argmax()]) == qp
    if not signed:
        assert bool((out[w < 0] == 0).all())


def test_minmax_straight_through_gradient():
    w = torch.randn(4, 6, requires_grad=True)
    fq = MinMaxFakeQuantizer(w.detach(), bits=4, signed=False)
    up = torch.randn(4, 6)
    (fq(w) * up).sum().backward()
    inside = w.detach() >= 0
    assert torch.allclose(w.grad[inside], up[inside], rtol=1e-5)
    assert bool((w.grad[~inside] == 0).all())


# ---------------------------------------------------------------------------------------------
# activation quantization


def test_activation_quantizers_initialize_train_and_reload():
    model = small_model()
    quantizers = attach_activation_quantizers(model, ["2"], bits=4)
    q = quantizers["2"]
    assert isinstance(q, LsqActivationQuantizer) and not q.signed and q.qp == 15
    seen: list[torch.Tensor] = []
    model[2].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    x = torch.randn(32, 8)
    hidden = model[1](model[0](x)).detach()
    out = model(x)
    assert float(q.step.detach()) == pytest.approx(float(2 * hidden.abs().mean() / math.sqrt(15)), rel=1e-5)
    k = seen[0] / q.step.detach()
    assert torch.allclose(k, k.round(), atol=1e-4) and float(k.min()) >= 0 and float(k.max()) <= 15
    out.square().mean().backward()
    assert q.step.grad is not None and float(q.step.grad.abs()) > 0
    assert "2.input_quantizer.step" in model.state_dict()

    with torch.no_grad():
        q.step.mul_(1.5)
    fresh = small_model()
    attach_activation_quantizers(fresh, ["2"], bits=4)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))  # the loaded step is not re-initialized
    assert fresh[2].input_quantizer.step.item() == q.step.item()

    assert remove_activation_quantizers(model) == ["2"]
    assert not hasattr(model[2], "input_quantizer")
    with torch.no_grad():
        assert torch.equal(model(x), model[2](model[1](model[0](x))))


def test_activation_quantizer_bad_names_and_bits():
    with pytest.raises(ValueError, match="nope"):
        attach_activation_quantizers(small_model(), ["nope"])
    with pytest.raises(ValueError, match="bits"):
        attach_activation_quantizers(small_model(), ["0"], bits=9)
    model = small_model()
    attach_activation_quantizers(model, ["0"])
    with pytest.raises(ValueError, match="already"):
        attach_activation_quantizers(model, ["0"])


@given(w=weights, bits=bits_st, per_channel=st.booleans(), signed=st.booleans(),
       factor=st.sampled_from([1.0, 0.1, 3.0]), seed=st.integers(0, 1000))
def test_fused_node_equals_the_composition(w, bits, per_channel, signed, factor, seed):
    """One autograd node: the composition's forward value bitwise, its gradients to rounding, and
    each gradient alone (the weight frozen, or the step) the same as both together."""
    fq = LsqFakeQuantizer(w, bits=bits, signed=signed, per_channel=per_channel)
    with torch.no_grad():
        fq.step.mul_(factor)
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed))

    def run(fused: bool, v_grad: bool, s_grad: bool):
        v = w.clone().requires_grad_(v_grad)
        step = fq.step.detach().clone().requires_grad_(s_grad)
        if fused:
            out = _LsqFakeQuantize.apply(v, step, fq.grad_scale, _FLOORS[w.dtype], fq.qn, fq.qp)
        else:
            out = fake_quantize(v, lsq_step(step, fq.grad_scale, w.dtype), fq.qn, fq.qp)
        if v_grad or s_grad:
            (out * up).sum().backward()
        return out.detach(), v.grad, step.grad

    out, gv, gs = run(True, True, True)
    ref_out, ref_gv, ref_gs = run(False, True, True)
    assert torch.equal(out, ref_out)
    torch.testing.assert_close(gv, ref_gv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gs, ref_gs, rtol=1e-4, atol=1e-5 * float(gs.abs().max()) + 1e-6)
    _, only_v, _ = run(True, True, False)
    _, _, only_s = run(True, False, True)
    assert torch.equal(only_v, gv) and torch.equal(only_s, gs)


@given(w=weights, bits=bits_st, per_channel=st.booleans(), seed=st.integers(0, 1000))
def test_log_step_learns_log_s_with_the_same_grid(w, bits, per_channel, seed):
    """``log_step``: the same quantizer on ``s = exp(log_step)``; d/dlog_step = s * d/ds."""
    plain = LsqFakeQuantizer(w, bits=bits, per_channel=per_channel)
    logq = LsqFakeQuantizer(w, bits=bits, per_channel=per_channel, log_step=True)
    assert plain.log_step is None and logq.step is None
    with torch.no_grad():
        plain.step.copy_(logq.log_step.exp())  # the same s in both
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed))
    out_plain, out_log = plain(w), logq(w)
    assert torch.equal(out_plain, out_log)
    codes, scale = logq.quantize(w)
    assert torch.equal(codes.to(scale.dtype) * scale, out_log.detach())  # the artifact's codes
    (out_plain * up).sum().backward()
    (out_log * up).sum().backward()
    torch.testing.assert_close(logq.log_step.grad, plain.step.grad * plain.step.detach(), rtol=1e-5, atol=1e-7)
    names = {n for n, _ in logq.named_parameters()}
    assert names == {"log_step"}


def test_log_step_moves_every_step_size_by_the_same_fraction_under_adam():
    """The reason for the option: one Adam update changes ``log s`` by about lr for a fine and a
    coarse grid alike, so their step sizes change by the same fraction (on ``s`` itself the fine
    grid's change would be larger relative to its size)."""
    w = torch.randn(16, 8)
    for bits in (2, 8):
        fq = LsqFakeQuantizer(w, bits=bits, per_channel=False, log_step=True)
        before = float(fq.step_size())
        opt = torch.optim.Adam(fq.parameters(), lr=0.01)
        (fq(w) * torch.randn(w.shape)).sum().backward()
        opt.step()
        assert abs(float(fq.step_size()) / before - 1) == pytest.approx(0.01, rel=0.01)


def test_log_step_round_trips_through_the_registry_and_a_state_dict():
    registry = squeezer.load_registry(autoload=False)
    config = registry.create("quantizer", "lsq", {"bits": 3, "log_step": True})
    w = torch.randn(4, 6)
    fq = config.build(w)
    with torch.no_grad():
        fq.log_step.add_(0.3)
    fresh = config.build(torch.randn(4, 6))
    fresh.load_state_dict(fq.state_dict())
    assert torch.equal(fresh(w), fq(w))
    with pytest.raises(squeezer.ConfigError, match="log_step"):
        registry.create("quantizer", "lsq", {"log_step": "yes"})
