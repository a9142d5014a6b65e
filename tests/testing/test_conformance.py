"""The conformance kit over every registered strategy, and against deliberately broken ones."""

from __future__ import annotations

import subprocess
import sys

import attrs
import pytest
import torch
from hypothesis import Phase, settings
from hypothesis import strategies as st
from torch import nn

import squeezer
from squeezer.registry import Registry
from squeezer.testing import (
    check_distillation_loss,
    check_importance,
    check_quantizer,
    check_registry,
    check_scheduler,
    check_strategy,
)
from squeezer.testing.models import MODEL_NAMES, Toy

REGISTRY = squeezer.load_registry(autoload=False)
# broken strategies fail at once; skipping the shrink phase keeps these tests fast
FAST = settings(max_examples=20, deadline=None, database=None, phases=[Phase.explicit, Phase.generate])
REALISTIC_TARGETS = st.floats(0.0, 1.0)


def _params(kind: str) -> list[object]:
    names = REGISTRY.names(kind)
    if not names:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {kind} registered"))]
    return names


@pytest.mark.parametrize("name", _params("importance"))
def test_builtin_importances_conform(name: str) -> None:
    check_importance(REGISTRY.get("importance", name).cls)


@pytest.mark.parametrize("name", _params("scheduler"))
def test_builtin_schedulers_conform(name: str) -> None:
    check_scheduler(REGISTRY.get("scheduler", name).cls, targets=REALISTIC_TARGETS)


@pytest.mark.parametrize("name", _params("quantizer"))
def test_registered_quantizers_conform(name: str) -> None:
    check_quantizer(REGISTRY.get("quantizer", name).cls, max_examples=20)


@pytest.mark.parametrize("name", _params("distillation_loss"))
def test_builtin_distillation_losses_conform(name: str) -> None:
    check_distillation_loss(REGISTRY.get("distillation_loss", name).cls)


def test_check_strategy_dispatch_and_check_registry() -> None:
    check_strategy(REGISTRY.get("importance", "l2"), max_examples=5)
    check_strategy("distillation_loss", REGISTRY.get("distillation_loss", "hinton").cls, options={"temperature": 2.0})
    check_registry(REGISTRY, kinds=["importance", "distillation_loss"], max_examples=5)
    with pytest.raises(ValueError, match="unknown kind"):
        check_strategy("pruner", object)


def test_kit_accepts_geometric_with_tiny_target() -> None:
    check_scheduler(REGISTRY.create("scheduler", "geometric", {"target": 4.0711801789890774e-16, "rounds": 11}))


# --------------------------------------------------------------------------------------------------
# a correct third-party strategy of each kind passes


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return x.round()

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        return g


class UniformFQ(nn.Module):
    def __init__(self, weight: torch.Tensor, bits: int, offset: float = 0.0, out_dtype: torch.dtype | None = None):
        super().__init__()
        self.bits = bits
        self.qmax = 2 ** (bits - 1) - 1
        self.offset = offset
        self.out_dtype = out_dtype
        peak = float(weight.detach().abs().max().float())
        self.step = nn.Parameter(torch.tensor(peak / self.qmax if peak > 0 else 1.0))

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = (w.float() / self.step.detach()).round().clamp(-self.qmax, self.qmax)
        return codes.to(torch.int32), self.step.detach()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        codes = _RoundSTE.apply(w.float() / self.step).clamp(-self.qmax, self.qmax)
        out: torch.Tensor = codes * self.step + self.offset
        return out.to(self.out_dtype or w.dtype)


@attrs.frozen
class Uniform:
    """Symmetric per-tensor uniform quantizer."""

    bits: int = 4

    def build(self, weight: torch.Tensor) -> nn.Module:
        return UniformFQ(weight, self.bits)


@attrs.frozen
class Taylor:
    """First-order Taylor |w * g|."""

    needs_gradients = True

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        assert grad is not None
        return (weight.float() * grad.float()).abs()


def test_correct_third_party_strategies_pass() -> None:
    check_quantizer(Uniform, dtypes=(torch.float32, torch.float16, torch.bfloat16))
    check_quantizer(Uniform(bits=2))
    check_importance(Taylor)


# --------------------------------------------------------------------------------------------------
# broken strategies are rejected with a clear message


@attrs.frozen
class WrongShape:
    needs_gradients = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return weight.float().abs().reshape(-1)[:1]


@attrs.frozen
class Noisy:
    needs_gradients = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return weight.float().abs() + torch.rand(weight.shape)


@attrs.frozen
class IntegerScore:
    needs_gradients = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return weight.abs().round().long()


@attrs.frozen
class InPlace:
    needs_gradients = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return weight.abs_().float()


class NotAttrs:
    needs_gradients = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return weight.float().abs()


@attrs.frozen
class NoFlag:
    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return weight.float().abs()


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (WrongShape, "score shape"),
        (Noisy, "two calls on the same input differ"),
        (IntegerScore, "is not floating"),
        (InPlace, "modified the weight in place"),
        (NotAttrs, "must be an attrs class"),
        (NoFlag, "needs_gradients must be a bool"),
    ],
)
def test_broken_importances_rejected(strategy: type, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        check_importance(strategy, hypothesis_settings=FAST)
    assert strategy.__qualname__ in str(info.value)


@attrs.frozen(kw_only=True)
class Decreasing:
    target: float = 0.5

    def sparsities(self) -> list[float]:
        return [self.target, self.target / 2, self.target]


@attrs.frozen(kw_only=True)
class MissesTarget:
    target: float = 0.5
    rounds: int = 3

    def sparsities(self) -> list[float]:
        return [self.target * r / (self.rounds + 1) for r in range(1, self.rounds + 1)]


@attrs.frozen(kw_only=True)
class Overshoots:
    target: float = 0.5

    def sparsities(self) -> list[float]:
        return [min(1.0, self.target * 1.5) + 0.01, self.target]


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (Decreasing, "schedule decreases sparsity"),
        (MissesTarget, "not at its target"),
        (Overshoots, "must lie in \\[0, 1\\]|schedule decreases sparsity"),
        (Decreasing(target=0.4), "schedule decreases sparsity"),
    ],
)
def test_broken_schedulers_rejected(strategy: object, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_scheduler(strategy, hypothesis_settings=FAST)


@attrs.frozen
class Offset:
    bits: int = 4

    def build(self, weight: torch.Tensor) -> nn.Module:
        return UniformFQ(weight, self.bits, offset=0.125)


@attrs.frozen
class Widening:
    bits: int = 4

    def build(self, weight: torch.Tensor) -> nn.Module:
        return UniformFQ(weight, self.bits, out_dtype=torch.float64)


@attrs.frozen
class NoSTE:
    bits: int = 4

    def build(self, weight: torch.Tensor) -> nn.Module:
        fq = UniformFQ(weight, self.bits)
        def forward(w: torch.Tensor) -> torch.Tensor:  # rounds without a straight-through estimator
            return (w.detach().float() / fq.step).round().clamp(-fq.qmax, fq.qmax).mul(fq.step).detach().to(w.dtype)

        fq.forward = forward  # type: ignore[method-assign]
        return fq


@attrs.frozen
class LyingCodes:
    bits: int = 4

    def build(self, weight: torch.Tensor) -> nn.Module:
        fq = UniformFQ(weight, self.bits)
        real = fq.quantize
        fq.quantize = lambda w: (real(w)[0], real(w)[1] * 2)  # type: ignore[method-assign]
        return fq


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (Offset, "do not map to exactly zero|does not map to zero"),
        (Widening, "changed shape/dtype"),
        (NoSTE, "no gradient reaches the weight"),
        (LyingCodes, r"codes \* scale from quantize\(\) differ"),
        (Uniform(bits=0), "bits must be an int >= 1"),
    ],
)
def test_broken_quantizers_rejected(strategy: object, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_quantizer(strategy, hypothesis_settings=FAST)


@attrs.frozen
class Unreduced:
    def __call__(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (s - t).pow(2).mean(-1)


@attrs.frozen
class Biased:
    def __call__(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (s - t).pow(2).mean() + 1.0


@attrs.frozen
class Detaching:
    def __call__(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (s.detach() - t).pow(2).mean()


@attrs.frozen
class Overflowing:
    def __call__(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # >= 0 and 0 on identical logits, so the kit's only complaint can be the overflow
        return torch.exp(100 * (s - t).abs()).sum() - s.numel()


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (Unreduced, "0-d scalar"),
        (Biased, "identical logits"),
        (Detaching, "does not depend on the student"),
        (Overflowing, "not finite"),
    ],
)
def test_broken_distillation_losses_rejected(strategy: type, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_distillation_loss(strategy, hypothesis_settings=FAST)
    if strategy is Biased:
        check_distillation_loss(strategy, zero_for_identical=False, max_examples=5)


def test_classes_needing_options_are_reported() -> None:
    @attrs.frozen(kw_only=True)
    class NeedsAlpha:
        alpha: float
        needs_gradients = False

        def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
            return weight.float().abs() * self.alpha

    with pytest.raises(AssertionError, match="pass options"):
        check_importance(NeedsAlpha)
    check_importance(NeedsAlpha, options={"alpha": 2.0}, max_examples=5)


# --------------------------------------------------------------------------------------------------
# the pytest plugin's fixtures


def test_fixture_squeezer_registry(squeezer_registry: Registry) -> None:
    assert squeezer_registry.names("importance") == ["l1", "l2", "lamp"]
    assert squeezer_registry is not REGISTRY


def test_fixture_squeezer_plugin_manager(squeezer_plugin_manager: object) -> None:
    assert squeezer_plugin_manager.get_plugin("magnitude") is not None  # type: ignore[attr-defined]


def test_fixture_register_plugin(register_plugin: object) -> None:
    class Plugin:
        @staticmethod
        @squeezer.hookimpl
        def squeezer_register_importances(registry: Registry) -> None:
            registry.add_importance("taylor", Taylor)

    registry = register_plugin(Plugin)  # type: ignore[operator]
    assert registry.get("importance", "taylor").plugin == "Plugin"
    check_importance(registry.get("importance", "taylor").cls, max_examples=5)
    assert "taylor" not in squeezer.load_registry(autoload=False).names("importance")
    assert register_plugin(Plugin, block=["magnitude"]).names("importance") == ["taylor"]  # type: ignore[operator]


def test_fixture_toy_model_default(toy_model: Toy) -> None:
    model, x = toy_model
    assert model(x).shape == (2, 4)


@pytest.mark.parametrize("toy_model", MODEL_NAMES, indirect=True)
def test_fixture_toy_model_parametrized(toy_model: Toy) -> None:
    model, x = toy_model
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 4)
    squeezer.compress.attach(model)
    squeezer.compress.prune(model, lambda _p, w: w.abs().float(), 0.5)
    with torch.no_grad():
        assert bool(torch.isfinite(model(x)).all())


def test_fixture_cli_runner(cli_runner: object) -> None:
    import typer
    from typer.testing import CliRunner

    assert isinstance(cli_runner, CliRunner)
    app = typer.Typer()

    @app.command()
    def hello(name: str) -> None:
        typer.echo(f"hi {name}")

    result = cli_runner.invoke(app, ["bob"])  # type: ignore[attr-defined]
    assert result.exit_code == 0 and "hi bob" in result.output


def test_plugin_and_package_do_not_import_torch() -> None:
    code = (
        "import sys, squeezer.testing, squeezer.testing.pytest_plugin;"
        "assert 'torch' not in sys.modules and 'hypothesis' not in sys.modules, 'imported eagerly'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_kl_a_few_ulps_below_zero_is_not_called_negative() -> None:
    """The draw that once failed CI: Hinton KD at T = 4 on nearly equal tiny logits gave -1.0005e-6."""
    from squeezer.testing import check_distillation_loss
    from squeezer_distill.losses import HintonKD

    s, t = torch.tensor([[0.0048, -0.0018]]), torch.tensor([[0.0013, -0.0043]])
    assert HintonKD()(s, t).item() > -1e-5
    check_distillation_loss(HintonKD, max_examples=50)
