"""A recipe in steps or shares runs end to end: resolved to whole epochs once the loader is known,
the plan and its rounding reported as notes, checkpoints in epochs, and a resume refused when the
loader's length changed so that the same recipe would resolve differently."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import squeezer
from squeezer import ConfigError
from squeezer.pipeline import checkpoint
from squeezer.pipeline.events import Note, Pruned, StageStarted, StepEnded
from squeezer.pipeline.runner import CHECKPOINT, run
from squeezer.recipe import parse_recipe

BUDGET = """
[budget]
steps = 50
[model]
factory = "squeezer.examples.digits:make_model"
width = 4
[data]
factory = "{data}"
batch_size = 256
[[stages]]
type = "train"
share = 0.3
[[stages]]
type = "prune"
share = 0.4
scheduler = {{ name = "geometric", target = 0.5, rounds = 2 }}
quantizer = {{ name = "lsq", bits = 4 }}
[[stages]]
type = "mutual"
warmup_share = 0.1
share = 0.2
"""


@pytest.fixture(scope="module")
def registry() -> squeezer.Registry:
    return squeezer.load_registry(autoload=False)


def test_a_steps_budget_runs_in_whole_epochs(tmp_path: Path, registry: squeezer.Registry) -> None:
    events: list[Any] = []
    recipe = parse_recipe(BUDGET.format(data="squeezer.examples.digits:make_loaders"), registry=registry)
    result = run(recipe, out=tmp_path, registry=registry, export=False, sink=events.append)
    # 1,347 digits in batches of 256: 6 steps per epoch; 50 steps = 8.33 epochs
    started = [(e.type, e.epochs, e.steps_per_epoch) for e in events if isinstance(e, StageStarted)]
    assert started == [("train", 3, 6), ("prune", 4, 6), ("mutual", 3, 6)]  # 15 + 20 + (5 + 10) steps asked
    assert sum(isinstance(e, StepEnded) for e in events) == 60
    assert [e.round for e in events if isinstance(e, Pruned)] == [0, 1]
    notes = [(e.text, e.level) for e in events if isinstance(e, Note) and "epoch" in e.text]
    assert notes == [
        ("budget 50 steps = 8.33 epochs of 6 steps; the stages run whole epochs of 6 steps: train 3 epochs, "
         "prune 2 x 2 epochs, mutual warm-up 1 epoch, mutual 2 epochs; 10 epochs (60 steps) in all", "info"),
        ("lengths in steps or shares rounded to the nearest whole epoch: train 2.5 -> 3, prune 1.67 -> 2 per round, "
         "mutual warm-up 0.83 -> 1, mutual 1.67 -> 2", "info"),
    ]
    assert 0.0 <= result.accuracy <= 1.0 and result.sparsity > 0.4
    meta = checkpoint.load(tmp_path / CHECKPOINT)[1]
    stages = meta["recipe"]["stages"]  # what ran, in epochs
    assert [stages[0]["epochs"], stages[1]["epochs_per_round"], stages[2]["warmup_epochs"], stages[2]["epochs"]] \
        == [3, 2, 1, 2]
    assert "budget" not in meta["recipe"] and all("share" not in s for s in stages)


FACTORY = """
from squeezer.examples.digits import make_loaders as digits
SAMPLES = {samples}

def make_loaders(batch_size=256):
    import torch
    train, val = digits(batch_size)
    x, y = train.dataset.tensors
    data = torch.utils.data.TensorDataset(x[:SAMPLES], y[:SAMPLES])
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True), val
"""


def test_a_resume_that_would_resolve_differently_is_refused(tmp_path: Path, registry: squeezer.Registry,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "budget_data.py"
    module.write_text(FACTORY.format(samples=1024), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "budget_data", raising=False)
    text = BUDGET.format(data="budget_data:make_loaders").replace("steps = 50", "steps = 24")
    recipe = parse_recipe(text, registry=registry)
    out = tmp_path / "out"
    run(recipe, out=out, registry=registry, export=False)  # 4 steps per epoch
    import budget_data

    monkeypatch.setattr(budget_data, "SAMPLES", 512)  # now 2 steps per epoch: every share doubles in epochs
    with pytest.raises(ConfigError, match=r"stages\[0\].epochs: the recipe's steps or shares now resolve to 4 "
                                          r"epochs of 2 steps, but this checkpoint ran 2"):
        run(recipe, out=out, registry=registry, export=False, resume=True)
    monkeypatch.setattr(budget_data, "SAMPLES", 1024)
    run(recipe, out=out, registry=registry, export=False, resume=True)  # the same length resumes


def test_a_loader_without_len_is_refused_naming_the_field(tmp_path: Path, registry: squeezer.Registry,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lenless_data.py").write_text(
        "from squeezer.examples.digits import make_loaders as digits\n"
        "class Batches:\n"
        "    def __init__(self, loader):\n"
        "        self.loader = loader\n"
        "    def __iter__(self):\n"
        "        return iter(self.loader)\n"
        "def make_loaders(batch_size=256):\n"
        "    train, val = digits(batch_size)\n"
        "    return Batches(train), val\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = parse_recipe(BUDGET.format(data="lenless_data:make_loaders"), registry=registry)
    with pytest.raises(ConfigError, match=r"stages\[0\].share: a length in steps or as a share needs the training "
                                          r"loader's length, and data.factory 'lenless_data:make_loaders' returned "
                                          r"a Batches without len\(\)"):
        run(recipe, out=tmp_path / "out", registry=registry, export=False)
