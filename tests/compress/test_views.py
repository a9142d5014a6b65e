"""The three views of a compressed weight: values and where gradients flow."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from squeezer import compress
from squeezer.testing.conformance import weight_tensors


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return x.round()

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        return g


class UniformFQ(nn.Module):
    """Symmetric per-tensor uniform fake quantizer with a straight-through estimator."""

    def __init__(self, weight: torch.Tensor, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.qmax = 2 ** (bits - 1) - 1
        peak = float(weight.detach().abs().max()) if weight.numel() else 0.0
        self.register_buffer("step", torch.tensor(peak / self.qmax if peak > 0 else 1.0))

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = (w.float() / self.step).round().clamp(-self.qmax, self.qmax)
        return codes, self.step

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        codes = _RoundSTE.apply(w.float() / self.step).clamp(-self.qmax, self.qmax)
        out: torch.Tensor = (codes * self.step).to(w.dtype)
        return out


@attrs.frozen
class Uniform:
    bits: int = 3

    def build(self, weight: torch.Tensor) -> nn.Module:
        return UniformFQ(weight, self.bits)


class One(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(w.clone())

    def forward(self) -> torch.Tensor:
        return self.weight


def compressed(w: torch.Tensor, sparsity: float, quantize: bool) -> One:
    model = One(w)
    compress.attach_paths(model, ["weight"])
    compress.prune(model, lambda _p, x: x.abs().float(), sparsity, scope="layer")
    if quantize:
        compress.attach_quantizers(model, lambda _p: ("uniform", Uniform()))
    return model


cases = given(
    w=weight_tensors(dtypes=(torch.float32,)),
    sparsity=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    quantize=st.booleans(),
    seed=st.integers(0, 2**16),
)


def _grad_of(model: One, which: str, upstream: torch.Tensor) -> torch.Tensor:
    orig = compress.original(model, "weight")
    orig.grad = None
    with compress.view(model, which):  # type: ignore[arg-type]
        (model() * upstream).sum().backward()
    assert orig.grad is not None
    return orig.grad


@cases
def test_view_values(w: torch.Tensor, sparsity: float, quantize: bool, seed: int) -> None:
    model = compressed(w, sparsity, quantize)
    mask = compress.masks(model)["weight"]
    param = dict(compress.compressed_weights(model))["weight"]
    kept = torch.where(mask, w, torch.zeros(()))
    student_expected = param.quantizer(kept) if quantize else kept
    with torch.no_grad():
        student = model()
        with compress.view(model, "teacher"):
            teacher = model()
        with compress.view(model, "teacher_fp"):
            teacher_fp = model()
    assert torch.equal(student, student_expected)
    assert bool((student[~mask] == 0).all())
    assert torch.equal(teacher[mask], student_expected[mask])
    assert torch.equal(teacher[~mask], w[~mask])
    assert torch.equal(teacher_fp, w)
    assert param.view == "student"  # restored after each block


@cases
def test_view_gradients(w: torch.Tensor, sparsity: float, quantize: bool, seed: int) -> None:
    model = compressed(w, sparsity, quantize)
    mask = compress.masks(model)["weight"]
    upstream = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed))
    g_student = _grad_of(model, "student", upstream)
    assert bool((g_student[~mask] == 0).all())
    if not quantize:
        assert torch.equal(g_student[mask], upstream[mask])
    for which in ("teacher", "teacher_fp"):
        g = _grad_of(model, which, upstream)
        assert bool((g[mask] == 0).all()), f"{which}: important entries got gradient"
        assert torch.equal(g[~mask], upstream[~mask]), f"{which}: pruned entries must train"


def test_views_through_a_linear_forward() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    w = layer.weight.detach().clone()
    compress.attach(layer)
    compress.prune(layer, lambda _p, x: x.abs().float(), 0.5)
    mask = compress.masks(layer)["weight"]
    x = torch.randn(4, 6)
    with compress.view(layer, "teacher_fp"):
        torch.testing.assert_close(layer(x), x @ w.T + layer.bias)
    torch.testing.assert_close(layer(x), x @ (w * mask).T + layer.bias)
    with compress.view(layer, "teacher"):
        layer(x).sum().backward()
    grad = compress.original(layer, "weight").grad
    assert grad is not None and bool((grad[mask] == 0).all()) and bool((grad[~mask] != 0).any())


def test_view_restores_on_error_and_rejects_unknown() -> None:
    model = compressed(torch.randn(5), 0.4, False)
    with pytest.raises(RuntimeError), compress.view(model, "teacher"):
        raise RuntimeError("inside")
    assert dict(compress.compressed_weights(model))["weight"].view == "student"
    with pytest.raises(ValueError, match="view must be one of"), compress.view(model, "fp32"):  # type: ignore[arg-type]
        pass
