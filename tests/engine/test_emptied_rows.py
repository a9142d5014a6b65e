"""A pruning round that empties rows (output channels, class rows) says so."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import squeezer
from squeezer import compress
from squeezer.engine.pruner import emptied_rows_remedy
from squeezer.registry import Registry
from squeezer.session import Compression


@pytest.fixture(scope="module")
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


def _head_heavy() -> nn.Module:
    """A classifier head of small weights (fan-in 2000): global L1 prunes it first."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 2000), nn.ReLU(), nn.Linear(2000, 10))


def _warnings(model: nn.Module, registry: Registry, importance: str, target: float = 0.95,
              keep_rows: bool = False) -> list[str]:
    comp = Compression(model, importance=importance, schedule=("geometric", {"target": target, "rounds": 3}),
                       prune_every=0, min_density=0.0, keep_rows=keep_rows, registry=registry)
    comp.attach()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comp.prune_due()
    return [str(w.message) for w in caught]


def test_layer_sparsity_counts_rows_with_no_weight_left() -> None:
    model = nn.Sequential(nn.Linear(3, 4))
    compress.attach(model)
    (layer,) = compress.prune(model, lambda path, w: torch.arange(w.numel(), dtype=torch.float).view_as(w), 0.5)
    assert (layer.rows, layer.empty_rows) == (4, 2)  # the two rows of the smallest scores


def test_global_l1_emptying_class_rows_is_named(registry: Registry) -> None:
    messages = _warnings(_head_heavy(), registry, "l1")
    assert any("rows (output channels or classes) of 4.weight are pruned entirely" in m and "'lamp'" in m
               for m in messages), messages


def test_the_remedy_does_not_suggest_lamp_to_a_lamp_run() -> None:
    assert "'lamp'" in emptied_rows_remedy("l1") and "keep_rows = true" in emptied_rows_remedy("l1")
    assert emptied_rows_remedy("lamp") == "keep_rows = true, a lower target or a higher min_density"


def test_keep_rows_the_default_keeps_every_class_row_under_global_l1(registry: Registry) -> None:
    """The default ``keep_rows`` keeps a weight in each of the head's class rows that global L1
    empties without it (the test above), and the round still reaches its target."""
    model = _head_heavy()
    assert Compression(nn.Linear(2, 2), registry=registry).keep_rows
    messages = _warnings(model, registry, "l1", keep_rows=True)
    assert not any("pruned entirely" in m or "of the target" in m for m in messages), messages
    masks = compress.masks(model)
    assert masks["4.weight"].any(dim=1).all() and masks["2.weight"].any(dim=1).all()
    assert abs(compress.sparsity(model) - 0.95) < 1e-3


def test_lamp_keeps_every_class_row(registry: Registry) -> None:
    model = _head_heavy()
    messages = _warnings(model, registry, "lamp")
    assert not any("4.weight" in m for m in messages), messages
    assert compress.masks(model)["4.weight"].any(dim=1).all()


def test_no_warning_at_modest_sparsity(registry: Registry) -> None:
    assert _warnings(_head_heavy(), registry, "lamp", target=0.5) == []


def test_a_layer_of_tiny_weights_emptied_by_global_l1_is_named(registry: Registry) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():
        model[2].weight.mul_(1e-6)  # global L1 takes all but the one weight every layer keeps
    messages = _warnings(model, registry, "l1", target=0.7)
    assert any("3 of 4 rows (output channels or classes) of 2.weight" in m for m in messages), messages


def test_the_default_importance_is_lamp(registry: Registry) -> None:
    from squeezer.recipe.configs import PruneStage, Strategy

    assert Compression(nn.Linear(2, 2), registry=registry).importance_name == "lamp"
    assert PruneStage(scheduler=Strategy(name="one_shot")).importance.name == "lamp"


def head_heavy_on_digits() -> nn.Module:
    """The digits images (flattened 64 values) through a head of small weights: a recipe factory."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2000), nn.ReLU(),
                         nn.Linear(2000, 10))


def test_the_recipe_runner_reports_emptied_rows_as_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning, not an info note: the CLI shows it in yellow and benchmarks keep it."""
    from squeezer.pipeline.events import Note
    from squeezer.recipe import parse_recipe

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    recipe = parse_recipe("""
[model]
factory = "test_emptied_rows:head_heavy_on_digits"
[data]
factory = "squeezer.examples.digits:make_loaders"
[[stages]]
type = "prune"
importance = "l1"
min_density = 0.0
keep_rows = false
scheduler = { name = "one_shot", target = 0.95 }
epochs_per_round = 0
""")
    notes: list[Note] = []
    squeezer.run(recipe, out=tmp_path / "out", sink=lambda e: notes.append(e) if isinstance(e, Note) else None)
    emptied = [n for n in notes if "pruned entirely" in n.text]
    assert emptied and all(n.level == "warning" for n in emptied), notes
