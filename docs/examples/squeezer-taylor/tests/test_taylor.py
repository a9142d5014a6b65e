"""The plugin's own tests: squeezer's conformance kit plus what makes each strategy correct."""

import pytest
import torch
from squeezer_taylor.importance import TaylorImportance
from squeezer_taylor.losses import CosineKD
from squeezer_taylor.tasks import MultiLabel

from squeezer.testing import check_distillation_loss, check_importance, check_task


def test_taylor_conforms() -> None:
    check_importance(TaylorImportance)


def test_cosine_conforms() -> None:
    check_distillation_loss(CosineKD)
    check_distillation_loss(CosineKD, options={"temperature": 4.0})


def test_multilabel_conforms() -> None:
    check_task(MultiLabel)  # on the kit's (batch, values) examples; the others do not fit


def test_multilabel_values() -> None:
    task = MultiLabel()
    logits = torch.tensor([[2.0, -1.0], [-3.0, 0.5]])
    targets = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert task.score(task.stats(logits, targets)) == 0.75  # one of four labels wrong


def test_taylor_is_weight_times_gradient() -> None:
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    g = torch.tensor([0.5, 0.1, 0.0, -4.0])
    assert torch.equal(TaylorImportance()(w, g), torch.tensor([0.5, 0.2, 0.0, 2.0]))
    with pytest.raises(ValueError, match="needs the gradient"):
        TaylorImportance()(w)


def test_cosine_values() -> None:
    loss = CosineKD()
    s = torch.tensor([[2.0, 0.0, -1.0]])
    assert loss(s, s + 5.0).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant
    far = loss(torch.tensor([[20.0, 0.0]]), torch.tensor([[0.0, 20.0]])).item()
    assert far == pytest.approx(1.0, abs=1e-6)  # disjoint confident predictions


def test_registered_through_the_hooks() -> None:
    import squeezer_taylor

    import squeezer

    registry = squeezer.load_registry(autoload=False, plugins=[squeezer_taylor])
    assert registry.get("importance", "taylor").cls is TaylorImportance
    assert registry.get("distillation_loss", "cosine").cls is CosineKD
    assert registry.get("task", "multilabel").cls is MultiLabel
