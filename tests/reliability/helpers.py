"""Hostile models, broken plugins and a killable child run for the reliability suite.

Recipes name the factories here as ``helpers:<name>``: the test modules put this directory on
``sys.path`` (and subprocesses get it through ``PYTHONPATH``), as tests/pipeline/ddp_support.py does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from squeezer import hookimpl

HERE = Path(__file__).resolve().parent


# --- recipes ---------------------------------------------------------------------------------

#: train, then prune with LSQ over two rounds: the run whose checkpoints and artifact the file tests damage
TRAIN_PRUNE_LSQ = """
seed = 2
[model]
factory = "helpers:tiny"
[data]
factory = "helpers:loaders"
[[stages]]
type = "train"
epochs = 1
[[stages]]
type = "prune"
scheduler = { name = "geometric", target = 0.5, rounds = 2 }
quantizer = { name = "lsq", bits = 4 }
epochs_per_round = 1
"""


# --- assertions ------------------------------------------------------------------------------


def one_line_error(result: Any, code: int, *needles: str) -> str:
    """A CLI result that failed with ``code`` and exactly one ``error: ...`` line holding every needle."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- data and models -------------------------------------------------------------------------


def loaders(n: int = 96, batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    """Synthetic 1x8x8 'digits' (no sklearn, instant): random pixels, labels from a fixed rule."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1)).long()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=batch_size, shuffle=True), DataLoader(data, batch_size=n)


def tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


class MatmulOnly(nn.Module):
    """Weights used through ``@`` only: no Linear or Conv, so nothing the default targets prune."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(64, 10) * 0.1)
        self.norm = nn.LayerNorm(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(1)) @ self.w


def no_prunable() -> nn.Module:
    return MatmulOnly()


def tied() -> nn.Module:
    """Two Linear layers sharing one weight (as tied embeddings do)."""
    a, b = nn.Linear(64, 64), nn.Linear(64, 64)
    b.weight = a.weight
    return nn.Sequential(nn.Flatten(), a, nn.ReLU(), b, nn.ReLU(), nn.Linear(64, 10))


class WithCodes(nn.Module):
    """A float Linear plus an integer parameter (e.g. a lookup table) that a parameter glob hits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.fc.register_parameter("codes", nn.Parameter(torch.arange(10), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def int_param() -> nn.Module:
    return WithCodes()


def bad_weight(value: str = "nan", layer: int = 3) -> nn.Module:
    """:func:`tiny` with one entry of layer ``layer``'s weight set to NaN, inf or -inf."""
    model = tiny()
    weight: Any = model.get_submodule(str(layer)).weight
    with torch.no_grad():
        weight[0, 0] = float(value)
    return model


def not_a_module() -> Any:
    return "a string"


def raises() -> nn.Module:
    raise RuntimeError("factory exploded")


def exits() -> nn.Module:
    sys.exit(0)


# --- broken strategies -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class BadImportance:
    """Scores with a chosen defect: 'shape', 'int', 'nan', 'list' or 'raise'."""

    defect: str = "shape"
    needs_gradients = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> Any:
        if self.defect == "shape":
            return weight.abs().flatten()
        if self.defect == "int":
            return (weight.abs() * 100).long()
        if self.defect == "nan":
            s = weight.abs().clone()
            s.view(-1)[0] = float("nan")
            return s
        if self.defect == "list":
            return weight.abs().tolist()
        raise RuntimeError("importance exploded")


class _ShapeChanger(nn.Module):
    bits = 4

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w.flatten()


class _Offset(nn.Module):
    bits = 4

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + 0.5


class _Doubler(nn.Module):
    bits = 4

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w.double()


@attrs.frozen(kw_only=True)
class BadQuantizer:
    """Builds a fake quantizer with a chosen defect: 'shape', 'offset' (0 -> 0.5), 'dtype',
    'not_module' or 'raise'."""

    defect: str = "shape"
    bits: int = 4

    def build(self, weight: torch.Tensor) -> Any:
        modules = {"shape": _ShapeChanger, "offset": _Offset, "dtype": _Doubler}
        if self.defect in modules:
            return modules[self.defect]()
        if self.defect == "not_module":
            return lambda w: w
        raise RuntimeError("quantizer build exploded")


@attrs.frozen(kw_only=True)
class DecreasingSchedule:
    """Sparsity going down between rounds: pruned weights would have to revive."""

    target: float = 0.3

    def sparsities(self) -> list[float]:
        return [0.6, self.target]


@attrs.frozen(kw_only=True)
class RaisingSchedule:
    target: float = 0.5

    def sparsities(self) -> list[float]:
        raise ZeroDivisionError("schedule exploded")


@attrs.frozen(kw_only=True)
class ExplodingInit:
    """A strategy whose construction fails with something other than a bad option."""

    target: float = 0.5

    def __attrs_post_init__(self) -> None:
        raise KeyError("missing resource")


@attrs.frozen(kw_only=True)
class RaisingLoss:
    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("loss exploded")


class BrokenPlugins:
    """A plugin object registering the broken strategies above (named, as an entry point would be)."""

    __name__ = "broken"

    @hookimpl
    def squeezer_register_importances(self, registry: Any) -> None:
        registry.add_importance("bad", BadImportance)

    @hookimpl
    def squeezer_register_schedulers(self, registry: Any) -> None:
        registry.add_scheduler("decreasing", DecreasingSchedule)
        registry.add_scheduler("raising", RaisingSchedule)
        registry.add_scheduler("exploding", ExplodingInit)

    @hookimpl
    def squeezer_register_quantizers(self, registry: Any) -> None:
        registry.add_quantizer("bad", BadQuantizer)

    @hookimpl
    def squeezer_register_distillation_losses(self, registry: Any) -> None:
        registry.add_distillation_loss("bad_loss", RaisingLoss)


class RaisesOnRegister:
    __name__ = "raises_on_register"

    @hookimpl
    def squeezer_register_quantizers(self, registry: Any) -> None:
        raise OSError("cannot find my CUDA kernels")


class RegistersGarbage:
    __name__ = "registers_garbage"

    @hookimpl
    def squeezer_register_importances(self, registry: Any) -> None:
        registry.add_importance("Not A Name", BadImportance)


class WrongHookSignature:
    __name__ = "wrong_signature"

    @hookimpl
    def squeezer_register_importances(self, registry: Any, device: Any) -> None:
        pass


# --- the child process of the SIGKILL tests ---------------------------------------------------


def child(recipe_path: str, out: str, resume: bool, step_delay: float, kill_in_replace: int) -> None:
    """Run a recipe, printing one line per checkpoint (flushed), sleeping ``step_delay`` per step.

    ``kill_in_replace=n``: SIGKILL this process inside the n-th checkpoint write, after the
    temporary file is complete and fsynced but before it is renamed into place.
    """
    import squeezer
    from squeezer import atomic
    from squeezer.pipeline.events import Checkpointed, StepEnded

    torch.set_num_threads(1)
    writes = 0
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        nonlocal writes
        if str(dst).endswith("last.safetensors"):
            writes += 1
            if writes == kill_in_replace:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    if kill_in_replace:
        setattr(atomic.os, "replace", replace)  # noqa: B010 (mypy: a narrower signature)

    def sink(event: object) -> None:
        if isinstance(event, Checkpointed):
            print(json.dumps({"checkpoint": event.path}), flush=True)
        elif isinstance(event, StepEnded) and step_delay:
            time.sleep(step_delay)

    result = squeezer.run(recipe_path, out=out, resume=resume, sink=sink)
    print(json.dumps({"done": str(result.artifact), "accuracy": result.accuracy}), flush=True)


if __name__ == "__main__":  # python helpers.py RECIPE OUT RESUME STEP_DELAY KILL_IN_REPLACE
    child(sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4]), int(sys.argv[5]))
