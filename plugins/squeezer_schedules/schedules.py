"""Sparsity schedules: the target sparsity of each pruning round."""

from __future__ import annotations

import attrs

_sparsity = [attrs.validators.instance_of((int, float)), attrs.validators.ge(0.0), attrs.validators.le(1.0)]
#: More pruning rounds than any schedule needs (each round is at least one pruning pass over the
#: model); the bound keeps a typo such as ``rounds = 10**8`` from taking minutes to validate.
MAX_ROUNDS = 1000
_rounds = [attrs.validators.instance_of(int), attrs.validators.ge(1), attrs.validators.le(MAX_ROUNDS)]


@attrs.frozen(kw_only=True)
class OneShotSchedule:
    """Prune to the target in a single round."""

    target: float = attrs.field(validator=_sparsity, metadata={"help": "final sparsity in [0, 1]"})

    def sparsities(self) -> list[float]:
        return [self.target]


@attrs.frozen(kw_only=True)
class GeometricSchedule:
    """Iterative magnitude pruning: each round removes the same fraction of the remaining weights.

    Round ``r`` of ``n`` reaches ``1 - (1 - target) ** (r / n)``, i.e. a constant fraction
    ``p = 1 - (1 - target) ** (1 / n)`` of the surviving weights is pruned per round.
    """

    target: float = attrs.field(validator=_sparsity, metadata={"help": "final sparsity in [0, 1]"})
    rounds: int = attrs.field(default=4, validator=_rounds, metadata={"help": f"pruning rounds (1..{MAX_ROUNDS})"})

    def sparsities(self) -> list[float]:
        keep = 1.0 - self.target
        values = [1.0 - keep ** (r / self.rounds) for r in range(1, self.rounds + 1)]
        # float error can overshoot the target by an ulp (tiny targets): clip, and end exactly on it
        values = [min(v, self.target) for v in values[:-1]] + [self.target]
        return values


@attrs.frozen(kw_only=True)
class CubicSchedule:
    """Zhu & Gupta's gradual schedule ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3``.

    Evaluated at the ``n`` pruning steps ``t = t0 + k * dt``, ``k = 1..n``; prunes fast early and
    slowly near the target.
    """

    target: float = attrs.field(validator=_sparsity, metadata={"help": "final sparsity s_f in [0, 1]"})
    initial: float = attrs.field(default=0.0, validator=_sparsity, metadata={"help": "initial sparsity s_i"})
    rounds: int = attrs.field(default=4, validator=_rounds, metadata={"help": f"pruning steps n (1..{MAX_ROUNDS})"})

    def __attrs_post_init__(self) -> None:
        if self.initial > self.target:
            raise ValueError(f"initial sparsity {self.initial} exceeds target {self.target}")

    def sparsities(self) -> list[float]:
        n = self.rounds
        values = [self.target + (self.initial - self.target) * (1 - k / n) ** 3 for k in range(1, n + 1)]
        values[-1] = self.target
        return values
