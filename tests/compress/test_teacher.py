"""The self-teacher with shared normalization (``owns`` without ``"norm"``): the student's running
statistics stay the student's (a teacher's train-mode forward used to overwrite them, and the
deployable student fell to chance on the digits example)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import squeezer
from squeezer import compress
from squeezer.compress.teacher import SelfTeacher
from squeezer.session import Compression
from squeezer.testing import models


def _pruned(name: str) -> tuple[nn.Module, torch.Tensor]:
    model, x = models.make(name, batch=8)
    compress.attach(model)
    compress.prune(model, lambda _p, w: w.abs(), 0.6, scope="layer")
    return model, x


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers() if "running" in n or "batches" in n}


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys() and actual
    for name in expected:
        assert torch.equal(actual[name], expected[name]), f"{name}: the teacher changed the student's statistics"


def test_a_sharing_teacher_leaves_the_students_running_statistics() -> None:
    model, x = _pruned("cnn_bn")
    model.train()
    alone = copy.deepcopy(model)  # the student without a teacher
    teacher = SelfTeacher(model, owns=())
    teacher.train()
    assert teacher.private == [] and teacher.shared_stats
    for _ in range(3):
        model(x)
        teacher(x)
        alone(x)
    _assert_same(_buffers(model), _buffers(alone))


def test_a_sharing_teacher_normalizes_as_one_with_its_own_copies() -> None:
    """Train mode: batch statistics, as a teacher that owns its norm layers; eval mode: the
    student's statistics (which such a teacher's copies equal right after creation)."""
    model, x = _pruned("cnn_bn")
    model.train()
    model(x)  # statistics that differ from the initial ones
    sharing, owning = SelfTeacher(model, owns=()), SelfTeacher(model, owns=("norm",))
    for mode in (False, True):  # eval first: the owning teacher's train forward moves its copies
        sharing.train(mode)
        owning.train(mode)
        torch.testing.assert_close(sharing(x), owning(x), rtol=0, atol=0)


def test_a_model_without_norm_layers_shares_nothing_to_protect() -> None:
    model, x = _pruned("mlp")
    teacher = SelfTeacher(model, owns=())
    assert teacher.private == [] and teacher.shared_stats == []
    teacher.train()
    assert teacher(x).shape == model(x).shape


def test_own_loop_mutual_steps_with_shared_norm_keep_the_students_statistics() -> None:
    """``Compression.self_teacher(owns=())`` in a user's loop (the callbacks use the same path):
    with a zero learning rate the weights stay put, so the student's statistics must equal those
    of a copy that ran the same student forwards and no teacher."""
    model, x = models.make("cnn_bn", batch=8)
    y = torch.arange(8) % 4
    comp = Compression(model, importance="l1", schedule=("one_shot", {"target": 0.6}), prune_every=1,
                       registry=squeezer.load_registry(autoload=False))
    comp.attach()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    comp.step(optimizer)
    assert comp.done
    teacher = comp.self_teacher(optimizer, owns=())
    model.train()
    alone = copy.deepcopy(model)
    for _ in range(3):
        loss = comp.mutual_loss(model(x), teacher(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        alone(x)
    _assert_same(_buffers(model), _buffers(alone))


@pytest.mark.parametrize("owns", [(), ("norm",)])
def test_teacher_eval_never_writes_statistics(owns: tuple[str, ...]) -> None:
    model, x = _pruned("cnn_bn")
    teacher = SelfTeacher(model, owns=owns)
    before, own_before = _buffers(model), {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.eval()
    teacher(x)
    _assert_same(_buffers(model), before)
    assert all(torch.equal(v, own_before[k]) for k, v in teacher.state_dict().items())
