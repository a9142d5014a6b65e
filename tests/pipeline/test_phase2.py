"""PQK Phase 2: the self-teacher shares the student's storage and the update split holds exactly."""

from __future__ import annotations

import copy

import attrs
import pytest
import torch
from torch import nn

from squeezer import compress
from squeezer.compress.teacher import SelfTeacher, teacher_private_names


class _RoundSTE(nn.Module):
    """A minimal fake quantizer (fixed step, straight-through) so these tests need no plugin."""

    bits = 4

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = nn.Parameter(torch.tensor(step))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(w / self.step, -8, 7)
        return ((q.round() - q).detach() + q) * self.step

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.clamp(w / self.step, -8, 7).round().to(torch.int8), self.step.detach()


@attrs.frozen
class _Quant:
    bits: int = 4

    def build(self, weight: torch.Tensor) -> nn.Module:
        return _RoundSTE(float(weight.abs().max()) / 7 + 1e-8)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )


def _compressed(quantized: bool = True) -> nn.Module:
    model = _model()
    compress.attach(model)
    compress.prune(model, lambda _p, w: w.abs(), 0.6, scope="layer")
    if quantized:
        compress.attach_quantizers(model, lambda _p: ("test", _Quant()))
    return model


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


def _originals(model: nn.Module) -> dict[str, torch.Tensor]:
    return {path: compress.original(model, path).detach().clone() for path, _ in compress.compressed_weights(model)}


def _one_update(model: nn.Module, teacher: SelfTeacher, who: str, optimizer: str = "adam") -> None:
    params = list(model.parameters()) + list(teacher.parameters())
    opt = torch.optim.Adam(params, lr=0.1) if optimizer == "adam" else torch.optim.SGD(params, lr=0.1, momentum=0.9)
    x, y = _batch()
    net = teacher if who == "teacher" else model
    loss = nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("quantized", [True, False])
def test_teacher_update_leaves_important_weights_bit_identical(optimizer: str, quantized: bool) -> None:
    model = _compressed()
    teacher = SelfTeacher(model, quantized=quantized)
    before = _originals(model)
    steps_before = [p.quantizer.step.detach().clone() for _, p in compress.compressed_weights(model)]
    _one_update(model, teacher, "teacher", optimizer)
    changed_unimportant = False
    for path, p in compress.compressed_weights(model):
        after = compress.original(model, path)
        assert torch.equal(after[p.mask], before[path][p.mask]), path
        changed_unimportant |= not torch.equal(after[~p.mask], before[path][~p.mask])
    assert changed_unimportant, "the teacher should train its unimportant weights"
    for (_, p), s in zip(compress.compressed_weights(model), steps_before, strict=True):
        assert torch.equal(p.quantizer.step, s), "the teacher must not move the student's step sizes"


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_student_update_leaves_unimportant_weights_bit_identical(optimizer: str) -> None:
    model = _compressed()
    teacher = SelfTeacher(model)
    before = _originals(model)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    _one_update(model, teacher, "student", optimizer)
    changed_important = False
    for path, p in compress.compressed_weights(model):
        after = compress.original(model, path)
        assert torch.equal(after[~p.mask], before[path][~p.mask]), path
        assert torch.equal(model.get_submodule(path.rpartition(".")[0]).weight[~p.mask],
                           torch.zeros(int((~p.mask).sum())))
        changed_important |= not torch.equal(after[p.mask], before[path][p.mask])
    assert changed_important
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), f"student update touched teacher-private {k}"


def test_pruned_entries_have_exactly_zero_student_gradient() -> None:
    model = _compressed()
    x, y = _batch()
    nn.functional.cross_entropy(model(x), y).backward()
    for path, p in compress.compressed_weights(model):
        grad = compress.original(model, path).grad
        assert grad is not None and bool((grad[~p.mask] == 0).all()), path


def _dense_copy(model: nn.Module, teacher: SelfTeacher, quantized: bool) -> nn.Module:
    """A plain (unparametrized) model whose weights are important (quantized or not) + unimportant."""
    dense = _model()
    state = {}
    for path, p in compress.compressed_weights(model):
        w = compress.original(model, path).detach()
        kept = torch.where(p.mask, w, torch.zeros(()))
        important = p.quantizer(kept).detach() if quantized else w
        state[path] = torch.where(p.mask, important, w)
    for name, tensor in model.state_dict().items():
        if "parametrizations" not in name:
            state[name] = tensor
    for name in teacher.private:
        key = name.replace(".", "__")
        state[name] = teacher.params[key] if key in teacher.params else getattr(teacher.buffers_, key)
    dense.load_state_dict({k: v.detach() for k, v in state.items()})
    return dense


@pytest.mark.parametrize("quantized", [True, False])
def test_teacher_forward_equals_dense_important_plus_unimportant(quantized: bool) -> None:
    model = _compressed()
    teacher = SelfTeacher(model, quantized=quantized)
    with torch.no_grad():  # make the teacher's norm state differ from the student's
        for p in teacher.params.values():
            p.add_(0.1)
    teacher.eval()
    dense = _dense_copy(model, teacher, quantized).eval()
    x, _ = _batch()
    torch.testing.assert_close(teacher(x), dense(x), rtol=0, atol=1e-6)


def test_student_forward_equals_pruned_quantized_model() -> None:
    model = _compressed().eval()
    baked = compress.bake(copy.deepcopy(model)).eval()
    for path, p in compress.compressed_weights(model):
        w = compress.original(model, path).detach()
        expected = p.quantizer(torch.where(p.mask, w, torch.zeros(()))).detach()
        assert torch.equal(baked.get_submodule(path.rpartition(".")[0]).weight, expected)
        assert bool((expected[~p.mask] == 0).all())
    x, _ = _batch()
    torch.testing.assert_close(model(x), baked(x), rtol=0, atol=0)


def test_teacher_has_its_own_batchnorm_statistics() -> None:
    model = _compressed()
    teacher = SelfTeacher(model)
    assert set(teacher_private_names(model, ("norm",))) == {
        "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"
    }
    student_stats = model[1].running_mean.clone()
    teacher.train()
    teacher(_batch()[0])
    assert torch.equal(model[1].running_mean, student_stats), "teacher forward must not touch student BN stats"
    assert not torch.equal(teacher.buffers_.get_buffer("1__running_mean"), student_stats)
    assert int(teacher.buffers_.get_buffer("1__num_batches_tracked")) == 1


def test_teacher_costs_no_copy_of_compressed_weights() -> None:
    model = _compressed()
    teacher = SelfTeacher(model, owns=("norm", "bias"))
    teacher_numel = sum(t.numel() for t in teacher.state_dict().values())
    compressed_numel = sum(p.mask.numel() for _, p in compress.compressed_weights(model))
    assert teacher_numel < compressed_numel / 10
    assert "4.bias" in teacher.private and "0.bias" in teacher.private


def test_baking_a_deep_copy_leaves_the_original_intact() -> None:
    model = _compressed()
    x, _ = _batch()
    model.eval()
    expected = model(x)
    baked = compress.bake(copy.deepcopy(model))
    assert not list(compress.compressed_weights(baked))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(baked(x), expected, rtol=0, atol=0)


def test_mutual_stage_network_with_shared_norm_keeps_the_students_statistics() -> None:
    """The mutual stage's one-module network (student and teacher forwards) with
    ``teacher_owns = []``: the student's BatchNorm statistics are the student's alone."""
    from squeezer.pipeline.stages.mutual import StudentAndTeacher

    model = _compressed()
    model.train()
    alone = copy.deepcopy(model)
    net = StudentAndTeacher(model, SelfTeacher(model, owns=()))
    x, _ = _batch()
    for _ in range(2):
        net(x)
        alone(x)
    for name, buffer in alone.named_buffers():
        if "running" in name or "batches" in name:
            assert torch.equal(model.get_buffer(name), buffer), name
