"""Stage lengths in steps or as shares of a budget: validation (one line naming the field), resolution
to whole epochs (its invariants, under hypothesis), and recipes in epochs staying exactly as they were."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import squeezer
from squeezer import ConfigError
from squeezer.engine.schedule import Schedule, kd_weight
from squeezer.recipe import (
    Budget,
    MutualStage,
    PruneStage,
    Recipe,
    Strategy,
    TrainStage,
    load_recipe,
    parse_recipe,
    recipe_from_dict,
    recipe_to_dict,
    resolve_budget,
)
from squeezer.recipe.budget import OPTIONAL_FIELDS, whole_epochs

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in Path(str(resources.files("squeezer") / "recipes")).glob("*.toml"))
PQK = Path(str(resources.files("squeezer") / "recipes" / "pqk.toml"))
HEAD = """
[model]
factory = "squeezer.examples.digits:make_model"
[data]
factory = "squeezer.examples.digits:make_loaders"
"""
PRUNE = 'type = "prune"\nscheduler = { name = "geometric", target = 0.9, rounds = 4 }\n'


def shares(budget: str = "steps = 6000", train: str = "share = 0.3", prune: str = "share = 0.4",
           mutual: str = "warmup_share = 0.1\nshare = 0.2") -> str:
    """A recipe in shares; each argument is the body of its table."""
    return (f"[budget]\n{budget}\n{HEAD}\n[[stages]]\ntype = \"train\"\n{train}\n"
            f"[[stages]]\n{PRUNE}{prune}\n[[stages]]\ntype = \"mutual\"\n{mutual}\n")


def steps(train: str = "steps = 500", prune: str = "steps_per_round = 100", mutual: str = "steps = 300") -> str:
    return (f"{HEAD}\n[[stages]]\ntype = \"train\"\n{train}\n[[stages]]\n{PRUNE}{prune}\n"
            f"[[stages]]\ntype = \"mutual\"\n{mutual}\n")


@pytest.fixture(scope="module")
def registry() -> squeezer.Registry:
    return squeezer.load_registry(autoload=False)


# --- parsing and validation --------------------------------------------------------------------

def test_a_recipe_in_shares_parses() -> None:
    recipe = parse_recipe(shares())
    assert recipe.budget == Budget(steps=6000)
    train, prune, mutual = recipe.stages
    assert (train.share, prune.share, mutual.share, mutual.warmup_share) == (0.3, 0.4, 0.2, 0.1)


def test_a_recipe_in_steps_parses() -> None:
    train, prune, mutual = parse_recipe(steps()).stages
    assert isinstance(prune, PruneStage) and isinstance(mutual, MutualStage)
    assert (train.steps, prune.steps_per_round, mutual.steps, mutual.warmup_steps) == (500, 100, 300, None)


@pytest.mark.parametrize(("text", "message"), [
    (shares(train="share = 0.3\nepochs = 3"),
     "r.toml: stages[0].share: the length is already given by epochs; give one of epochs, steps, share"),
    (shares(train="steps = 10\nshare = 0.3"),
     "r.toml: stages[0].share: the length is already given by steps; give one of epochs, steps, share"),
    (shares(prune="share = 0.4\nepochs_per_round = 2"),
     "r.toml: stages[1].share: the length is already given by epochs_per_round; give one of epochs_per_round, "
     "steps_per_round, share"),
    (steps(mutual="steps = 3\nwarmup_epochs = 1\nwarmup_steps = 10"),
     "r.toml: stages[2].warmup_steps: the length is already given by warmup_epochs; give one of warmup_epochs, "
     "warmup_steps, warmup_share"),
    (shares(train="share = 0.2"), "r.toml: budget: the stages' shares sum to 0.9, not 1 (stages[0].share = 0.2, "
                                  "stages[1].share = 0.4, stages[2].warmup_share = 0.1, stages[2].share = 0.2)"),
    (shares(mutual="share = 0.3"), "r.toml: stages[2].warmup_share: required: a recipe with a [budget] gives "
                                   "every stage its share of it (a fraction; the shares sum to 1), not warmup_epochs"),
    (shares(train="steps = 100"), "r.toml: stages[0].share: required: a recipe with a [budget] gives every stage "
                                  "its share of it (a fraction; the shares sum to 1), not steps"),
    (shares(train="epochs = 3"), "r.toml: stages[0].share: required: a recipe with a [budget] gives every stage "
                                 "its share of it (a fraction; the shares sum to 1), not epochs"),
    (shares(train="share = 1.3"), "r.toml: stages[0].share: must be <= 1.0: 1.3"),
    (shares(train="share = -0.1"), "r.toml: stages[0].share: must be >= 0.0: -0.1"),
    (shares(train='share = "27%"'), "r.toml: stages[0].share: must be a number, got '27%'"),
    (shares(budget="steps = 0"), "r.toml: budget.steps: must be >= 1: 0"),
    (shares(budget="epochs = 4.5"), "r.toml: budget.epochs: must be an integer, got 4.5"),
    (shares(budget="steps = 10\nepochs = 4"), "r.toml: budget: give one of 'epochs' or 'steps' (e.g. [budget] "
                                              "steps = 6000)"),
    (shares(budget=""), "r.toml: budget: give one of 'epochs' or 'steps' (e.g. [budget] steps = 6000)"),
    (shares(budget="step = 10"), "r.toml: budget.step: unknown field; did you mean 'steps'? (valid: epochs, steps)"),
    (steps(train="share = 0.5"), "r.toml: stages[0].share: a share of what? Add the total, e.g. [budget] steps = "
                                 "6000 (or epochs = 40), or give steps or epochs instead"),
    (steps(train="steps = -1"), "r.toml: stages[0].steps: must be >= 0: -1"),
    (steps(train="steps = 2.5"), "r.toml: stages[0].steps: must be an integer, got 2.5"),
    (steps(prune="steps = 100"), "r.toml: stages[1].steps: is not used by a prune stage: it trains steps_per_round "
                                 "steps after each pruning round, so set steps_per_round (or share, for the whole "
                                 "stage)"),
    (steps(prune="steps_per_round = true"), "r.toml: stages[1].steps_per_round: must be an integer, got True"),
])
def test_errors_are_one_line_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe(text, source="r.toml")
    assert str(info.value) == message and "\n" not in message


def test_configs_built_in_python_refuse_two_units() -> None:
    with pytest.raises(ValueError, match="'share' gives the length again"):
        TrainStage(steps=10, share=0.5)
    with pytest.raises(ValueError, match="'warmup_share' gives the length again"):
        MutualStage(warmup_steps=10, warmup_share=0.5)
    with pytest.raises(ValueError, match="give one of 'epochs' or 'steps'"):
        Budget()


def test_shares_may_be_rounded_decimals() -> None:
    parse_recipe(shares(train="share = 0.333", prune="share = 0.333", mutual="warmup_share = 0\nshare = 0.334"))


# --- recipes in epochs are unchanged -----------------------------------------------------------

@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_bundled_recipes_resolve_to_themselves(path: Path, registry: squeezer.Registry) -> None:
    recipe = load_recipe(path, registry)
    resolution = resolve_budget(recipe, 7, registry=registry)
    assert resolution.recipe is recipe and not resolution.changed and resolution.notes() == []
    data = recipe_to_dict(recipe)
    written = json.dumps(data)
    assert not any(f'"{name}"' in written for name in OPTIONAL_FIELDS if name != "steps")
    assert "budget" not in data and all("steps" not in s and "share" not in s for s in data["stages"])


def test_recipes_in_steps_and_shares_read_back_from_their_data() -> None:
    for text in (shares(), steps(), shares(budget="epochs = 40")):
        recipe = parse_recipe(text)
        data = recipe_to_dict(recipe)
        assert recipe_from_dict(data) == recipe
        assert "epochs" not in data["stages"][0]  # replaced by steps or share, so not shown


def test_pqk_in_shares_of_its_44_epochs_is_pqk(registry: squeezer.Registry) -> None:
    text = PQK.read_text(encoding="utf-8")
    text = text.replace("epochs = 12", f"share = {12 / 44}").replace("epochs_per_round = 4", f"share = {20 / 44}")
    text = text.replace("warmup_epochs = 2\nepochs = 10", f"warmup_share = {2 / 44}\nshare = {10 / 44}")
    text = text.replace("[training]", "[budget]\nepochs = 44\n\n[training]")
    recipe = parse_recipe(text, registry=registry)
    resolution = resolve_budget(recipe, 22, registry=registry)
    assert resolution.recipe == load_recipe(PQK) and resolution.rounded == ()
    assert resolution.notes() == [(
        "budget 968 steps = 44 epochs of 22 steps; the stages run whole epochs of 22 steps: dense 12 epochs, "
        "phase1 5 x 4 epochs, phase2 warm-up 2 epochs, phase2 10 epochs; 44 epochs (968 steps) in all", "info")]


# --- resolution --------------------------------------------------------------------------------

def test_steps_round_to_the_nearest_epoch_and_say_so(registry: squeezer.Registry) -> None:
    recipe = parse_recipe(steps(train="steps = 5", prune="steps_per_round = 55", mutual="steps = 66"))
    resolution = resolve_budget(recipe, 22, registry=registry)
    train, prune, mutual = resolution.recipe.stages
    assert (train.epochs, prune.epochs_per_round, mutual.warmup_epochs, mutual.epochs) == (1, 3, 1, 3)
    assert all(getattr(s, f) is None for s in resolution.recipe.stages
               for f in ("steps", "share", "steps_per_round", "warmup_steps", "warmup_share") if hasattr(s, f))
    assert resolution.notes() == [
        ("the stages run whole epochs of 22 steps: train 1 epoch, prune 4 x 3 epochs, mutual warm-up 1 epoch, "
         "mutual 3 epochs; 17 epochs (374 steps) in all", "info"),
        ("lengths in steps or shares rounded to the nearest whole epoch: train 0.23 -> 1, prune 2.5 -> 3 per round",
         "info"),
        ("stages[0].steps: train asks 5 steps = 0.23 epochs, which runs as one epoch (22 steps): squeezer runs "
         "whole epochs of the training loader", "warning"),
    ]


def test_zero_is_zero() -> None:
    recipe = parse_recipe(shares(train="share = 0", prune="share = 0", mutual="warmup_share = 0\nshare = 1"))
    train, prune, mutual = resolve_budget(recipe, 10, {1: 4}).recipe.stages
    assert (train.epochs, prune.epochs_per_round, mutual.warmup_epochs, mutual.epochs) == (0, 0, 0, 600)


def test_a_prune_share_needs_the_rounds() -> None:
    with pytest.raises(ConfigError, match=r"stages\[1\].share: spreading a share over the pruning rounds"):
        resolve_budget(parse_recipe(shares()), 10)


def test_resolution_needs_a_loader_length() -> None:
    with pytest.raises(ConfigError, match="needs the training loader's length"):
        resolve_budget(parse_recipe(steps()), 0)


def _recipe(train: float, prune: float, warmup: float, mutual: float, budget: Budget) -> Recipe:
    return Recipe(
        model=squeezer.recipe.Factory(factory="m:f"), data=squeezer.recipe.Factory(factory="d:f"), budget=budget,
        stages=(TrainStage(share=train), PruneStage(scheduler=Strategy(name="one_shot"), share=prune),
                MutualStage(warmup_share=warmup, share=mutual)),
    )


@st.composite
def split(draw: st.DrawFn) -> tuple[float, float, float, float]:
    """Four shares summing to 1 (the last takes the rest)."""
    cuts = sorted(draw(st.lists(st.floats(0, 1), min_size=3, max_size=3)))
    return cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], 1 - cuts[2]


@settings(max_examples=300, deadline=None)
@given(split(), st.integers(1, 100_000), st.integers(1, 5000), st.integers(1, 12), st.booleans())
def test_resolution_invariants(shares_: tuple[float, float, float, float], total: int, spe: int, rounds: int,
                               in_epochs: bool) -> None:
    budget = Budget(epochs=max(1, total // 100)) if in_epochs else Budget(steps=total)
    resolution = resolve_budget(_recipe(*shares_, budget), spe, {1: rounds})
    budget_steps = resolution.budget_steps
    assert budget_steps == (budget.steps or (budget.epochs or 0) * spe)
    # the parts ask for exactly the budget: the shares sum to it
    assert sum(p.steps * (p.rounds or 1) if p.field == "epochs_per_round" else p.steps
               for p in resolution.parts) == pytest.approx(budget_steps, rel=1e-9)
    for p in resolution.parts:
        asked = p.steps / spe
        if p.steps == 0:
            assert p.epochs == 0
        elif p.steps < spe / 2:
            assert p.epochs == 1  # raised to its first epoch, and said so
            assert any(level == "warning" and f"stages[{p.stage}].{p.given}" in text
                       for text, level in resolution.notes())
        else:  # within half an epoch (a prune stage: per round)
            assert abs(p.epochs - asked) <= 0.5 + 1e-9
    train, prune, mutual = resolution.recipe.stages
    assert isinstance(prune, PruneStage) and isinstance(mutual, MutualStage)
    schedule = Schedule.of(resolution.recipe, rounds)
    assert schedule.total_epochs == resolution.total_epochs
    assert schedule.prune_epoch == train.epochs
    assert schedule.mutual_epoch == train.epochs + rounds * prune.epochs_per_round
    assert Schedule.for_loader(_recipe(*shares_, budget), rounds, spe) == schedule


@settings(max_examples=200, deadline=None)
@given(split(), st.integers(1, 50_000), st.integers(0, 50_000), st.integers(1, 2000), st.integers(1, 8))
def test_a_larger_budget_never_shortens_a_part(shares_: tuple[float, float, float, float], small: int, more: int,
                                               spe: int, rounds: int) -> None:
    def lengths(total: int) -> list[int]:
        return [p.epochs for p in resolve_budget(_recipe(*shares_, Budget(steps=total)), spe, {1: rounds}).parts]

    assert all(a <= b for a, b in zip(lengths(small), lengths(small + more), strict=True))


@given(st.floats(0, 1e7, allow_nan=False), st.floats(0, 1e7, allow_nan=False), st.integers(1, 10_000))
def test_whole_epochs_is_monotone(a: float, b: float, spe: int) -> None:
    lo, hi = sorted((a, b))
    assert whole_epochs(lo, spe) <= whole_epochs(hi, spe)


# --- the schedule ------------------------------------------------------------------------------

def test_the_schedule_refuses_an_unresolved_recipe_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^<recipe>: stages\[1\].steps_per_round: the recipe gives stage lengths "
                                          r"in steps or as shares"):
        Schedule.of(parse_recipe(steps(train="epochs = 2")), 4)
    schedule = Schedule.for_loader(parse_recipe(steps(train="epochs = 2")), 4, 50)
    assert schedule == Schedule(prune_epoch=2, epochs_per_round=2, mutual_epoch=10, total_epochs=17)
    assert schedule.prune_steps(50) == (100, 100)


def test_kd_weight_refuses_a_warmup_in_steps() -> None:
    stage = MutualStage(warmup_steps=100, kd_weight=2.0)
    with pytest.raises(ConfigError, match="warm-up is in steps or a share"):
        kd_weight(stage, 3)
    assert kd_weight(attrs.evolve(stage, warmup_steps=None, warmup_epochs=2), 2) == 2.0


# --- torch-free validation, and the docs' example ----------------------------------------------

def test_validating_a_budget_recipe_imports_no_torch(tmp_path: Path) -> None:
    path = tmp_path / "budget.toml"
    path.write_text(shares(), encoding="utf-8")
    code = f"""
import contextlib, io, json, sys
from squeezer.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(["recipe", "validate", {str(path)!r}])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({{"code": code, "out": out.getvalue(),
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] in (0, None) and result["out"].startswith("ok: ") and result["torch"] == []


def test_the_reference_example_validates_and_resolves(registry: squeezer.Registry) -> None:
    page = (ROOT / "docs" / "reference" / "recipe.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- write: budget.toml -->\n```toml\n(.*?)```", page, re.S)
    assert len(blocks) == 1
    recipe = parse_recipe(blocks[0], registry=registry)
    assert recipe.budget == Budget(steps=6000)
    resolution = resolve_budget(recipe, 22, registry=registry)
    assert resolution.changed and Schedule.of(resolution.recipe, 5).total_epochs == resolution.total_epochs
