"""One schedule for the recipe runner and the callbacks: rounds on epochs, Phase 2's KD weight."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from squeezer.engine.schedule import Schedule, kd_weight, prune_epochs, rounds_before
from squeezer.recipe.configs import Factory, MutualStage, PruneStage, Recipe, Strategy, TrainStage


@given(rounds=st.integers(1, 8), per=st.integers(0, 5))
def test_every_round_runs_once_in_order_and_is_followed_by_its_epochs(rounds: int, per: int) -> None:
    epochs = prune_epochs(rounds, per)
    order = [r for epoch in range(max(1, epochs)) for r in rounds_before(epoch, rounds, per)]
    assert order == list(range(rounds))
    if per:  # round r runs before epoch r * per: each round, the last included, then trains `per` epochs
        assert all(list(rounds_before(r * per, rounds, per)) == [r] for r in range(rounds))
        assert epochs - (rounds - 1) * per == per


def test_kd_weight_is_zero_during_the_warm_up() -> None:
    stage = MutualStage(warmup_epochs=2, epochs=3, kd_weight=0.5)
    assert [kd_weight(stage, e) for e in range(5)] == [0.0, 0.0, 0.5, 0.5, 0.5]


def test_the_recipe_on_one_epoch_counter() -> None:
    recipe = Recipe(
        model=Factory(factory="m:f"), data=Factory(factory="d:f"),
        stages=(TrainStage(epochs=3),
                PruneStage(scheduler=Strategy(name="geometric", options={"target": 0.5}), epochs_per_round=2),
                MutualStage(warmup_epochs=1, epochs=2)),
    )
    schedule = Schedule.of(recipe, rounds=4)
    assert (schedule.prune_epoch, schedule.epochs_per_round, schedule.mutual_epoch) == (3, 2, 11)
    assert schedule.total_epochs == 3 + 4 * 2 + 1 + 2
    assert schedule.prune_steps(10) == (30, 20)
