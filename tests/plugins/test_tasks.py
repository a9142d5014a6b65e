"""The built-in tasks against their defining formulas, and the task contract through the kit."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import squeezer
from squeezer.engine.task import RunTask, TaskMismatch
from squeezer.errors import PluginError
from squeezer.testing import check_registry, check_task
from squeezer_tasks.tasks import Classification, LanguageModel, Regression, TokenClassification

ce = nn.functional.cross_entropy


def test_every_built_in_task_keeps_the_contract() -> None:
    check_registry(squeezer.load_registry(), kinds=["task"])
    for metric in ("mae", "mse"):
        check_task(Regression, options={"metric": metric})


@given(seed=st.integers(0, 2**16), n=st.integers(1, 9), c=st.integers(2, 6))
def test_classification_is_cross_entropy_and_top1_accuracy(seed: int, n: int, c: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits, y = torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)
    task = Classification()
    torch.testing.assert_close(task.loss(logits, y), ce(logits, y))
    stats = task.stats(logits, y)
    assert stats["count"] == n and stats["loss_sum"] == pytest.approx(float(ce(logits, y, reduction="sum")), rel=1e-5)
    assert task.score(stats) == pytest.approx(float((logits.argmax(-1) == y).float().mean()))


def test_token_classification_leaves_out_ignored_positions() -> None:
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(2, 4, 3, generator=g), torch.randint(0, 3, (2, 4), generator=g)
    y[1, 2:] = -100
    task = TokenClassification()
    kept_logits, kept_y = torch.cat([logits[0], logits[1, :2]]), torch.cat([y[0], y[1, :2]])
    torch.testing.assert_close(task.loss(logits, y), ce(kept_logits, kept_y))
    assert task.stats(logits, y)["count"] == 6
    torch.testing.assert_close(task.positions(logits, y), kept_logits)


def test_language_model_predicts_the_next_token_and_perplexity_is_exp_of_the_mean_nll() -> None:
    g = torch.Generator().manual_seed(1)
    logits, ids = torch.randn(3, 5, 7, generator=g), torch.randint(0, 7, (3, 5), generator=g)
    ids[2, 3:] = -100
    task = LanguageModel()
    rows = torch.cat([logits[0, :4], logits[1, :4], logits[2, :2]])
    labels = torch.cat([ids[0, 1:], ids[1, 1:], ids[2, 1:3]])
    torch.testing.assert_close(task.loss(logits, ids), ce(rows, labels))
    stats = task.stats(logits, ids)
    assert stats["count"] == 10
    assert task.score(stats) == pytest.approx(math.exp(float(ce(rows, labels))), rel=1e-5)


def test_language_model_predicts_its_own_input_ids_without_labels() -> None:
    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3)}
    inputs, targets = LanguageModel().split(batch)
    assert set(inputs) == {"input_ids", "attention_mask"} and torch.equal(targets, batch["input_ids"])
    assert LanguageModel().split({"input_ids": batch["input_ids"], "labels": batch["input_ids"]}) is None


@pytest.mark.parametrize("shape", [(16,), (16, 1), (16, 3)])
def test_regression_metrics_are_their_formulas(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(2)
    y = torch.randn(*shape, generator=g)
    out = y + 0.3 * torch.randn(*shape, generator=g)
    err = (out - y).double()
    sse, sst = float((err**2).sum()), float(((y.double() - y.double().mean()) ** 2).sum())
    assert Regression().score(Regression().stats(out, y)) == pytest.approx(1 - sse / sst, rel=1e-6)
    mae = Regression(metric="mae")
    assert mae.score(mae.stats(out, y)) == pytest.approx(float(err.abs().mean()), rel=1e-6)
    assert not mae.higher_is_better and Regression().higher_is_better
    torch.testing.assert_close(Regression().loss(out, y), nn.functional.mse_loss(out, y))


def test_r2_of_a_split_is_not_the_mean_of_its_batches() -> None:
    """R² needs the whole split's variance: the core sums statistics, so batching cannot change it."""
    task = Regression()
    y, out = torch.arange(8.0), torch.arange(8.0) + torch.tensor([0.5, -0.5] * 4)
    whole = task.score(task.stats(out, y))
    total: dict[str, float] = {}
    for part in (slice(0, 4), slice(4, 8)):
        for k, v in task.stats(out[part], y[part]).items():
            total[k] = total.get(k, 0.0) + v
    assert task.score(total) == pytest.approx(whole)


def test_mismatches_say_which_task_fits() -> None:
    task = RunTask.create(squeezer.load_registry(), "classification")
    with pytest.raises(TaskMismatch, match=r"\(16, 16, 1000\) .* \(16, 16\).*token_classification.*language_model"):
        task.loss(torch.zeros(16, 16, 1000), torch.zeros(16, 16, dtype=torch.long))
    with pytest.raises(TaskMismatch, match=r"targets must be integer class indices .*float32.*regression"):
        task.loss(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(TaskMismatch, match=r"targets must lie in 0..2"):
        task.stats(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]))


def test_a_task_that_breaks_its_contract_is_named() -> None:
    class Bad(Classification):
        def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return torch.zeros(3)

    task = RunTask(Bad(), "bad", "my-plugin")
    with pytest.raises(PluginError, match=r"task 'bad' \(plugin 'my-plugin'\): loss\(\): the loss must be a 0-d"):
        task.loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


def test_the_kit_catches_statistics_that_do_not_add_up() -> None:
    import attrs

    @attrs.frozen
    class MeanNotSum(Classification):
        def stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
            s = super().stats(outputs, targets)
            return {**s, "loss_sum": s["loss_sum"] / s["count"]}  # a mean: batches no longer add up

    with pytest.raises(AssertionError, match="do not sum to the whole"):
        check_task(MeanNotSum, max_examples=50)
