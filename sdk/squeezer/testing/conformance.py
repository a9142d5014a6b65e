"""Conformance kit: does a strategy keep the contract the core relies on?

Each ``check_*`` function takes a strategy class (built with ``options``, or its defaults) or an
instance, runs it over hypothesis-generated inputs and raises :class:`AssertionError` with a
message naming the strategy, the input and the broken rule. From a plugin author's test::

    from squeezer.testing import check_importance
    from my_plugin import TaylorImportance

    def test_conforms():
        check_importance(TaylorImportance)

Every check takes ``max_examples`` (default: the active hypothesis profile's, at most 30) or a
whole ``hypothesis_settings`` object replacing the kit's settings.

``check_strategy(info)`` dispatches on a :class:`~squeezer.registry.StrategyInfo` (or a kind and
a class), and ``check_registry(registry)`` checks every strategy a registry holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from torch import nn

from squeezer import contracts
from squeezer.errors import SqueezerError

__all__ = [
    "FLOAT_DTYPES",
    "check_distillation_loss",
    "check_importance",
    "check_quantizer",
    "check_registry",
    "check_scheduler",
    "check_strategy",
    "check_task",
    "logit_pairs",
    "task_batches",
    "weight_tensors",
]

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
_DEFAULT_MAX_EXAMPLES = 30


# --------------------------------------------------------------------------------------------------
# input strategies


@st.composite
def weight_tensors(
    draw: st.DrawFn,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    max_dims: int = 4,
    max_side: int = 5,
) -> torch.Tensor:
    """Finite weight tensors of 1 to ``max_dims`` dimensions (numel 1 included) in ``dtypes``.

    Values are random normals at various scales, small integers (many ties), or all equal.
    """
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=1, max_size=max_dims)))
    dtype = draw(st.sampled_from(list(dtypes)))
    kind = draw(st.sampled_from(["normal", "ties", "constant"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if kind == "normal":
        scale = draw(st.sampled_from([1e-3, 0.1, 1.0, 30.0]))
        w = torch.randn(shape, generator=g) * scale
    elif kind == "ties":
        w = torch.randint(-3, 4, shape, generator=g).to(torch.float32) * 0.25
    else:
        w = torch.full(shape, draw(st.sampled_from([0.0, 0.5, -2.0])))
    return w.to(dtype)


@st.composite
def logit_pairs(
    draw: st.DrawFn, dtypes: Sequence[torch.dtype] = (torch.float32,), max_batch: int = 8, max_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(student_logits, teacher_logits)`` of shape ``(N, C)``, ``C >= 2``, at various scales."""
    n = draw(st.integers(1, max_batch))
    c = draw(st.integers(2, max_classes))
    dtype = draw(st.sampled_from(list(dtypes)))
    scale = draw(st.sampled_from([0.01, 1.0, 5.0, 30.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    student = torch.randn(n, c, generator=g) * scale
    teacher = torch.randn(n, c, generator=g) * scale
    return student.to(dtype), teacher.to(dtype)


# --------------------------------------------------------------------------------------------------
# helpers


def _label(kind: str, strategy: Any) -> str:
    cls = strategy if isinstance(strategy, type) else type(strategy)
    return f"{kind} {cls.__module__}.{cls.__qualname__}"


def _instance(strategy: Any, options: Mapping[str, Any] | None, label: str) -> Any:
    if not isinstance(strategy, type):
        if options:
            raise TypeError(f"{label}: options apply only when a class is given, not an instance")
        return strategy
    try:
        return strategy(**dict(options or {}))
    except (TypeError, ValueError) as exc:
        raise AssertionError(
            f"{label}: cannot be built with options {dict(options or {})}: {exc} "
            "(pass options=... with valid values)"
        ) from None


_T = TypeVar("_T")


def _contract(label: str, where: str, check: Callable[[], _T]) -> _T:
    """Run one of :mod:`squeezer.contracts` (the checks the core applies in a run) as a kit failure."""
    try:
        return check()
    except contracts.ContractViolation as exc:
        raise AssertionError(f"{label}: {where}: {exc}") from None


def _require(cond: bool, label: str, message: str) -> None:
    if not cond:
        raise AssertionError(f"{label}: {message}")


def _require_attrs(strategy: Any, label: str) -> None:
    cls = strategy if isinstance(strategy, type) else type(strategy)
    _require(attrs.has(cls), label, "must be an attrs class (its fields are the recipe options)")


def _settings(max_examples: int | None, override: settings | None = None) -> settings:
    if override is not None:
        return override
    if max_examples is None:
        max_examples = min(settings().max_examples, _DEFAULT_MAX_EXAMPLES)
    return settings(
        max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )


def _describe(t: torch.Tensor) -> str:
    return f"tensor{tuple(t.shape)} {t.dtype}"


class _Holder(nn.Module):
    """A module whose only parameter is ``weight`` (any shape), to run the core's mask code on."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())

    def forward(self) -> torch.Tensor:
        return self.weight


def _run_prune(
    weight: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor], sparsities: Iterable[float], label: str
) -> None:
    """Prune a tensor round by round through the core; check counts, no revival, zeros in forward."""
    from squeezer import compress
    from squeezer.compress.selection import pruned_count

    holder = _Holder(weight)
    compress.attach_paths(holder, ["weight"])
    n = weight.numel()
    previous = torch.ones(weight.shape, dtype=torch.bool)
    zeros = 0
    for s in sparsities:
        try:
            compress.prune(holder, lambda _path, w: score(w), s, scope="layer", source=label)
        except SqueezerError as exc:
            raise AssertionError(f"{label}: the core rejected it at sparsity {s}: {exc}") from None
        mask = compress.masks(holder)["weight"]
        _require(bool((mask <= previous).all()), label, f"a pruned weight revived at sparsity {s}")
        zeros = max(pruned_count(s, n), zeros)
        _require(int((~mask).sum()) == zeros, label, f"expected {zeros} zeros at sparsity {s}")
        out = holder()
        _require(bool((out[~mask] == 0).all()), label, "pruned entries are not exactly zero in forward")
        previous = mask


# --------------------------------------------------------------------------------------------------
# importance


def check_importance(
    strategy: Any,
    *,
    options: Mapping[str, Any] | None = None,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    max_examples: int | None = None,
    hypothesis_settings: settings | None = None,
) -> None:
    """Check an importance criterion (see :class:`squeezer.strategies.Importance`).

    Over weights of 1-4 dimensions in ``dtypes`` (ties and all-equal included): a floating score of
    the weight's shape, no NaN, finite for finite weights, deterministic, the weight left untouched,
    and pruning by it through the core gives exact counts and never revives a weight.
    """
    label = _label("importance", strategy)
    _require_attrs(strategy, label)
    imp = _instance(strategy, options, label)
    needs = getattr(imp, "needs_gradients", None)
    _require(isinstance(needs, bool), label, f"needs_gradients must be a bool, got {needs!r}")
    _require(callable(imp), label, "must be callable as imp(weight, grad)")

    @_settings(max_examples, hypothesis_settings)
    @given(w=weight_tensors(dtypes), seed=st.integers(0, 2**16))
    def run(w: torch.Tensor, seed: int) -> None:
        grad = None
        if needs:
            grad = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)).to(w.dtype)
        before = w.clone()
        where = f"weight {_describe(w)}"
        with torch.no_grad():
            s = imp(w, grad)
            again = imp(w, grad)
        _require(isinstance(s, torch.Tensor), label, f"{where}: returned {type(s).__name__}, not a tensor")
        _require(s.shape == w.shape, label, f"{where}: score shape {tuple(s.shape)} != weight shape")
        _require(s.is_floating_point(), label, f"{where}: score dtype {s.dtype} is not floating")
        _require(not bool(torch.isnan(s).any()), label, f"{where}: score contains NaN")
        _require(bool(torch.isfinite(s).all()), label, f"{where}: score is not finite for finite weights")
        _require(torch.equal(s, again), label, f"{where}: two calls on the same input differ")
        _require(torch.equal(w, before), label, f"{where}: modified the weight in place")
        _run_prune(w, lambda x: imp(x, grad), (0.3, 0.6, 0.9), label)

    run()


# --------------------------------------------------------------------------------------------------
# scheduler


def _check_schedule(sched: Any, label: str) -> None:
    where = f"{sched!r}"
    values = _contract(label, where, lambda: contracts.schedule(sched.sparsities(), getattr(sched, "target", None)))
    _require(list(sched.sparsities()) == values, label, f"{where}: two calls of sparsities() differ")
    weight = torch.randn(37, generator=torch.Generator().manual_seed(0))
    _run_prune(weight, lambda x: x.abs().float(), values, f"{label} {where}")


def check_scheduler(
    strategy: Any,
    *,
    options: Mapping[str, Any] | None = None,
    max_rounds: int = 30,
    targets: st.SearchStrategy[float] | None = None,
    max_examples: int | None = None,
    hypothesis_settings: settings | None = None,
) -> None:
    """Check a sparsity scheduler (see :class:`squeezer.strategies.Scheduler`).

    A class is built over hypothesis-drawn ``target`` in [0, 1] (``targets`` overrides the
    strategy), ``rounds`` in 1..``max_rounds`` when it has that option, plus ``options``; an
    instance is checked as is.
    Rules: every value a finite number in [0, 1], non-decreasing, the last equal to ``target``,
    deterministic; applied round by round through the core the mask never revives a weight.
    """
    label = _label("scheduler", strategy)
    _require_attrs(strategy, label)
    if not isinstance(strategy, type):
        _check_schedule(strategy, label)
        return
    fields = {a.name for a in attrs.fields(strategy)}
    _require("target" in fields, label, "must have a 'target' option (the final sparsity)")
    extra = dict(options or {})

    @_settings(max_examples, hypothesis_settings)
    @given(
        target=targets if targets is not None else st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0)),
        rounds=st.integers(1, max_rounds),
    )
    def run(target: float, rounds: int) -> None:
        kwargs: dict[str, Any] = {"target": target, **extra}
        if "rounds" in fields and "rounds" not in extra:
            kwargs["rounds"] = rounds
        sched = _instance(strategy, kwargs, label)
        _check_schedule(sched, label)

    run()


# --------------------------------------------------------------------------------------------------
# quantizer


def check_quantizer(
    strategy: Any,
    *,
    options: Mapping[str, Any] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    max_examples: int | None = None,
    hypothesis_settings: settings | None = None,
) -> None:
    """Check a weight quantizer (see :class:`squeezer.strategies.Quantizer` and ``FakeQuantizer``).

    Over weights (some entries zeroed as pruning does; all-zero weights included), the module
    ``build(weight)`` returns: output of the input's shape and dtype, finite, deterministic;
    zero maps to exactly zero elementwise; ``quantize(w)`` gives integer codes within ``bits``
    with ``codes * scale == forward``; gradients reach the weight (STE) and are finite, as are
    those of the quantizer's own parameters; the core's ``attach_quantizers`` accepts it.
    """
    label = _label("quantizer", strategy)
    _require_attrs(strategy, label)
    cfg = _instance(strategy, options, label)
    bits = getattr(cfg, "bits", None)
    _require(
        isinstance(bits, int) and not isinstance(bits, bool) and bits >= 1, label,
        f"bits must be an int >= 1, got {bits!r}",
    )

    @_settings(max_examples, hypothesis_settings)
    @given(w=weight_tensors(dtypes), prune_seed=st.integers(0, 2**16), density=st.sampled_from([1.0, 0.5, 0.1]))
    def run(w: torch.Tensor, prune_seed: int, density: float) -> None:
        keep = torch.rand(w.shape, generator=torch.Generator().manual_seed(prune_seed)) < density
        w = torch.where(keep, w, w.new_zeros(()))
        where = f"weight {_describe(w)} (density {density})"
        fq = cfg.build(w.clone())
        _require(isinstance(fq, nn.Module), label, f"{where}: build() returned {type(fq).__name__}, not an nn.Module")
        fq_bits = getattr(fq, "bits", None)
        if not isinstance(fq_bits, int) or isinstance(fq_bits, bool):
            raise AssertionError(f"{label}: {where}: the built module's bits must be an int, got {fq_bits!r}")
        _require(callable(getattr(fq, "quantize", None)), label, f"{where}: the module has no quantize(w) method")
        with torch.no_grad():
            out = fq(w)
            again = fq(w)
            zero_out = fq(torch.zeros_like(w))
        _require(isinstance(out, torch.Tensor), label, f"{where}: forward returned {type(out).__name__}")
        _require(
            out.shape == w.shape and out.dtype == w.dtype, label,
            f"{where}: forward changed shape/dtype to {tuple(out.shape)} {out.dtype}",
        )
        _require(bool(torch.isfinite(out).all()), label, f"{where}: forward output is not finite")
        _require(torch.equal(out, again), label, f"{where}: two forwards of the same input differ")
        _require(bool((zero_out == 0).all()), label, f"{where}: an all-zero input does not map to zero")
        _require(bool((out[w == 0] == 0).all()), label, f"{where}: zero entries do not map to exactly zero")
        with torch.no_grad():  # the contract the core applies at export: codes * scale == forward, bitwise
            everywhere = torch.ones_like(w, dtype=torch.bool)
            codes, _ = _contract(label, where, lambda: contracts.quantizer_codes(fq, w, everywhere))
        limit = 2**fq_bits
        _require(bool((codes.abs() <= limit).all()), label, f"{where}: codes exceed the {fq_bits}-bit range")
        _require(codes.unique().numel() <= limit, label, f"{where}: more than 2**{fq_bits} distinct codes")
        # gradients: straight through to the weight, finite everywhere
        wg = w.detach().clone().requires_grad_(True)
        upstream = torch.randn(w.shape, generator=torch.Generator().manual_seed(prune_seed)).to(w.dtype)
        out_g = fq(wg)
        _require(out_g.requires_grad, label, f"{where}: no gradient reaches the weight (use an STE)")
        (out_g * upstream).sum().backward()
        _require(wg.grad is not None, label, f"{where}: no gradient reaches the weight (use an STE)")
        assert wg.grad is not None
        _require(bool(torch.isfinite(wg.grad).all()), label, f"{where}: the weight's gradient is not finite")
        for name, p in fq.named_parameters():
            if p.grad is not None:
                _require(
                    bool(torch.isfinite(p.grad).all()), label, f"{where}: gradient of parameter {name!r} is not finite"
                )
        _attach_through_core(w, cfg, label, where)

    run()


def _attach_through_core(w: torch.Tensor, cfg: Any, label: str, where: str) -> None:
    from squeezer import compress

    holder = _Holder(w)
    compress.attach_paths(holder, ["weight"])
    try:
        compress.attach_quantizers(holder, lambda _path: ("under_test", cfg), source=label)
    except SqueezerError as exc:
        raise AssertionError(f"{label}: {where}: the core rejected it: {exc}") from None
    out = holder()
    _require(bool(torch.isfinite(out).all()), label, f"{where}: the attached quantized weight is not finite")


# --------------------------------------------------------------------------------------------------
# distillation loss


def check_distillation_loss(
    strategy: Any,
    *,
    options: Mapping[str, Any] | None = None,
    zero_for_identical: bool = True,
    nonnegative: bool = True,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    max_examples: int | None = None,
    hypothesis_settings: settings | None = None,
) -> None:
    """Check a distillation loss (see :class:`squeezer.strategies.DistillationLoss`).

    Over logits ``(N, C)`` at several scales: a finite floating scalar (0-d) tensor, deterministic,
    inputs untouched, finite gradient reaching the student, none needed from the (detached)
    teacher; ``nonnegative`` losses are >= 0, and ``zero_for_identical`` ones are ~0 when student
    and teacher agree.
    """
    label = _label("distillation loss", strategy)
    _require_attrs(strategy, label)
    fn = _instance(strategy, options, label)
    _require(callable(fn), label, "must be callable as loss(student_logits, teacher_logits)")

    @_settings(max_examples, hypothesis_settings)
    @given(pair=logit_pairs(dtypes))
    def run(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
        s, t = pair
        where = f"logits {_describe(s)}, |max| {float(s.abs().max()):.3g}"
        s_before, t_before = s.clone(), t.clone()
        student = s.clone().requires_grad_(True)
        loss = fn(student, t.detach())
        _require(isinstance(loss, torch.Tensor), label, f"{where}: returned {type(loss).__name__}, not a tensor")
        _require(loss.dim() == 0, label, f"{where}: loss must be a 0-d scalar, got shape {tuple(loss.shape)}")
        _require(loss.is_floating_point(), label, f"{where}: loss dtype {loss.dtype} is not floating")
        _require(bool(torch.isfinite(loss)), label, f"{where}: loss {loss.item()} is not finite")
        if nonnegative:
            # float32 rounding leaves a KL of near-identical distributions a few ulps below 0,
            # scaled by T**2 in Hinton's loss (-1.0005e-6 at T = 4 was seen): not a broken rule
            _require(loss.item() >= -1e-5, label, f"{where}: loss {loss.item()} is negative")
        _require(loss.requires_grad, label, f"{where}: the loss does not depend on the student's logits")
        loss.backward()
        _require(student.grad is not None, label, f"{where}: no gradient reaches the student's logits")
        assert student.grad is not None
        _require(bool(torch.isfinite(student.grad).all()), label, f"{where}: the student's gradient is not finite")
        with torch.no_grad():
            again = fn(s, t)
            _require(
                torch.equal(again, loss.detach()), label, f"{where}: two calls on the same input differ"
            )
            _require(torch.equal(s, s_before) and torch.equal(t, t_before), label, f"{where}: modified its inputs")
            if zero_for_identical:
                same = fn(s, s.clone())
                tol = 1e-4 * max(1.0, float(s.abs().max().float()))
                _require(
                    abs(float(same)) <= tol, label,
                    f"{where}: loss for identical logits is {float(same)}, expected ~0",
                )

    run()


# --------------------------------------------------------------------------------------------------
# task


@st.composite
def task_batches(draw: st.DrawFn, max_batch: int = 8, max_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``(outputs, targets)`` of the three shapes the built-in tasks take, at various scales:
    class logits ``(N, C)`` with labels ``(N,)``, token logits ``(N, T, V)`` with tokens
    ``(N, T)``, or real outputs ``(N, D)`` with targets of the same shape."""
    n = draw(st.integers(1, max_batch))
    c = draw(st.integers(2, max_classes))
    scale = draw(st.sampled_from([0.01, 1.0, 5.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["classes", "tokens", "values"]))
    if kind == "classes":
        return torch.randn(n, c, generator=g) * scale, torch.randint(0, c, (n,), generator=g)
    if kind == "tokens":
        t = draw(st.integers(2, 6))
        return torch.randn(n, t, c, generator=g) * scale, torch.randint(0, c, (n, t), generator=g)
    d = draw(st.integers(1, 3))
    return torch.randn(n, d, generator=g) * scale, torch.randn(n, d, generator=g)


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-4 * max(1.0, abs(a), abs(b))


def check_task(
    strategy: Any,
    *,
    options: Mapping[str, Any] | None = None,
    examples: st.SearchStrategy[tuple[torch.Tensor, torch.Tensor]] | None = None,
    max_examples: int | None = None,
    hypothesis_settings: settings | None = None,
) -> None:
    """Check a task (see :class:`squeezer.strategies.Task`) on ``examples`` of ``(outputs,
    targets)`` (default :func:`task_batches`; a ``ValueError`` marks an example the task does not
    take, and at least some must fit).

    The core's contracts (:func:`squeezer.contracts.task_loss` and the others) on every result; a
    finite gradient from the loss and from the positions to the outputs; deterministic, inputs
    untouched; and the statistics add up: those of a batch's two halves sum to the whole's, with
    the same score (what lets the core evaluate a loader batch by batch).
    """
    label = _label("task", strategy)
    _require_attrs(strategy, label)
    task = _instance(strategy, options, label)
    for name in ("loss", "positions", "stats", "score"):
        _require(callable(getattr(task, name, None)), label, f"must define {name}()")
    _require(isinstance(getattr(task, "metric", None), str), label, "must name its metric (a str 'metric')")
    _require(isinstance(getattr(task, "higher_is_better", None), bool), label, "must say higher_is_better (a bool)")

    @_settings(max_examples, hypothesis_settings)
    @given(pair=examples if examples is not None else task_batches())
    def run(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
        outputs, targets = pair
        where = f"outputs {tuple(outputs.shape)}, targets {tuple(targets.shape)} ({targets.dtype})"
        before = (outputs.clone(), targets.clone())
        out = outputs.clone().requires_grad_(True)
        try:
            loss = task.loss(out, targets)
        except ValueError:
            assume(False)  # an example of a shape this task does not take
        _contract(label, f"{where}: loss()", lambda: contracts.task_loss(loss))
        _require(bool(torch.isfinite(loss)), label, f"{where}: loss {float(loss.detach())} is not finite")
        (grad,) = torch.autograd.grad(loss, out)
        _require(bool(torch.isfinite(grad).all()), label, f"{where}: the loss's gradient is not finite")
        rows = _contract(label, f"{where}: positions()", lambda: contracts.task_positions(task.positions(out, targets)))
        _require(rows.requires_grad, label, f"{where}: positions() must keep the outputs' gradient (KD trains on it)")
        with torch.no_grad():
            whole = _contract(label, f"{where}: stats()", lambda: contracts.task_stats(task.stats(outputs, targets)))
            _require(contracts.task_stats(task.stats(outputs, targets)) == whole, label,
                     f"{where}: two stats() calls on the same batch differ")
            _require(all(math.isfinite(v) for v in whole.values()), label,
                     f"{where}: stats() of finite outputs are not all finite ({whole})")
            score = _contract(label, f"{where}: score()", lambda: contracts.task_score(task.score(whole)))
            if outputs.shape[0] >= 2:
                k = outputs.shape[0] // 2
                total: dict[str, float] = {}
                for part in (slice(0, k), slice(k, None)):
                    for key, v in contracts.task_stats(task.stats(outputs[part], targets[part])).items():
                        total[key] = total.get(key, 0.0) + v
                _require(set(total) == set(whole) and all(_close(total[key], whole[key]) for key in whole), label,
                         f"{where}: the stats of the batch's two halves do not sum to the whole's "
                         f"({total} vs {whole})")
                _require(_close(contracts.task_score(task.score(total)), score), label,
                         f"{where}: the score of the summed halves differs from the whole's")
        _require(torch.equal(outputs, before[0]) and torch.equal(targets, before[1]), label,
                 f"{where}: modified its inputs")

    try:
        run()
    except Unsatisfiable:
        raise AssertionError(f"{label}: takes none of the example batches; pass examples= with outputs and "
                             "targets of the shapes it expects") from None


# --------------------------------------------------------------------------------------------------
# dispatch

_CHECKS: dict[str, Callable[..., None]] = {
    "importance": check_importance,
    "scheduler": check_scheduler,
    "quantizer": check_quantizer,
    "distillation_loss": check_distillation_loss,
    "task": check_task,
}


def check_strategy(info_or_kind: Any, cls: Any = None, **kwargs: Any) -> None:
    """Run the check of a strategy's kind: ``check_strategy(registry.get("importance", "l1"))``
    or ``check_strategy("importance", MyImportance, options={...})``."""
    if isinstance(info_or_kind, str):
        kind, target = info_or_kind, cls
    else:
        kind, target = info_or_kind.kind, info_or_kind.cls
    if kind not in _CHECKS:
        raise ValueError(f"unknown kind {kind!r} (valid: {', '.join(_CHECKS)})")
    if target is None:
        raise TypeError("check_strategy(kind, cls): cls is required")
    _CHECKS[kind](target, **kwargs)


def check_registry(registry: Any, kinds: Iterable[str] | None = None, **kwargs: Any) -> None:
    """Check every strategy of ``registry`` (of the given ``kinds``), each with its defaults."""
    wanted = set(kinds) if kinds is not None else set(_CHECKS)
    for info in registry:
        if info.kind in wanted:
            check_strategy(info, **kwargs)
