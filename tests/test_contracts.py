"""One contract per extension point: the conformance kit and the core apply the same functions,
so a strategy the kit passes cannot fail them in a run, and one the core refuses fails the kit."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch
from hypothesis import settings
from torch import nn

from squeezer import compress, contracts
from squeezer.artifact import export
from squeezer.errors import PluginError
from squeezer.recipe.loader import checked_schedule
from squeezer.testing import check_quantizer, check_scheduler

FAST = settings(max_examples=5, deadline=None)


class _OffByAHair(nn.Module):
    """quantize() returns a scale 1e-7 away from the one the forward uses."""

    bits = 4

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.step = float(weight.abs().max()) / 7 or 1.0

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (w / self.step).round().clamp(-7, 7), torch.tensor(self.step + 1e-7)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return (w / self.step).round().clamp(-7, 7) * self.step


@attrs.frozen
class OffByAHair:
    bits: int = 4

    def build(self, weight: torch.Tensor) -> nn.Module:
        return _OffByAHair(weight)


def test_a_quantizer_export_refuses_fails_the_kit(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="codes \\* scale from quantize"):
        check_quantizer(OffByAHair, hypothesis_settings=FAST)
    model = nn.Sequential(nn.Linear(8, 4))
    compress.attach_paths(model, ["0.weight"])
    compress.attach_quantizers(model, lambda _path: ("off", OffByAHair()), source="quantizer 'off'")
    with pytest.raises(PluginError, match="codes \\* scale from quantize"):
        export(model, tmp_path / "m.safetensors")


@attrs.frozen
class AlmostTarget:
    """Ends 1e-10 short of its target: the core allowed 1e-9, the kit demanded equality."""

    target: float = 0.5

    def sparsities(self) -> list[float]:
        return [0.25, self.target - 1e-10]


def test_a_schedule_the_kit_refuses_the_core_refuses() -> None:
    with pytest.raises(AssertionError, match="not at its target"):
        check_scheduler(AlmostTarget(), hypothesis_settings=FAST)
    with pytest.raises(PluginError, match="not at its target"):
        checked_schedule(AlmostTarget(), "stages[0].scheduler")


@pytest.mark.parametrize(("values", "target", "rule"), [
    ([], 0.5, "empty"),
    ([0.5, True], 1.0, "not a finite number"),
    ([0.5, float("nan")], 0.5, "not a finite number"),
    ([0.5, 1.5], 1.5, "must lie in"),
    ([0.6, 0.3], 0.3, "decreases"),
    ([0.3, 0.6], 0.7, "not at its target"),
    (iter(lambda: 0.5, None), 0.5, "more than 10,000 rounds"),
])
def test_schedule_rules(values: object, target: float, rule: str) -> None:
    with pytest.raises(contracts.ContractViolation, match=rule):
        contracts.schedule(values, target)  # type: ignore[arg-type]
