"""squeezer.session.Compression: compression state on a user's own training loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import squeezer
from squeezer import compress
from squeezer.compress.weight import compressed_weights, view
from squeezer.errors import ConfigError, PluginError, UnknownStrategyError
from squeezer.recipe.configs import QuantizerChoice, QuantizerOverride
from squeezer.registry import Registry
from squeezer.session import Compression
from squeezer.testing import models


@pytest.fixture(scope="module")
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


def _labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(-1)


def _loop(comp: Compression, model: nn.Module, x: torch.Tensor, steps: int, lr: float = 0.01) -> torch.optim.Optimizer:
    """A plain user loop: Adam (state to forget), the session stepped after every update."""
    y = torch.arange(x.shape[0]) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        comp.step(optimizer)
    return optimizer


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "conv1d_net", "transformer_net"])
def test_plain_loop_reaches_target_sparsity_and_bits(name: str, registry: Registry) -> None:
    model, x = models.make(name, batch=8)
    comp = Compression(model, importance="l1", schedule=("geometric", {"target": 0.8, "rounds": 3}),
                       quantizer=("lsq", {"bits": 4}), prune_every=2, min_density=0.0, registry=registry)
    comp.attach()
    assert comp.sparsity == 0.0 and comp.bits == {}
    optimizer = _loop(comp, model, x, steps=8)
    assert comp.done and comp.rounds_done == 3
    assert comp.sparsity == pytest.approx(0.8, abs=0.01)
    assert comp.bits and set(comp.bits.values()) == {4}
    assert set(comp.bits) == {path for path, _ in compressed_weights(model)}
    # the quantizers' step sizes joined the user's optimizer, and were trained
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in model.parameters())
    # pruned weights are exactly 0 in the student, and stay so after further training
    masks = compress.masks(model)
    _loop(comp, model, x, steps=3)
    for path, p in compressed_weights(model):
        assert torch.equal(p.mask, masks[path])
        module, attr = path.rsplit(".", 1)
        assert bool((getattr(model.get_submodule(module), attr)[~p.mask] == 0).all())


def test_pruned_entries_keep_no_optimizer_state(registry: Registry) -> None:
    model, x = models.make("mlp", batch=8)
    comp = Compression(model, schedule=("one_shot", {"target": 0.5}), prune_every=3, registry=registry)
    comp.attach()
    optimizer = _loop(comp, model, x, steps=3)
    for path, p in compressed_weights(model):
        state = optimizer.state[compress.original(model, path)]
        assert bool((state["exp_avg"][~p.mask] == 0).all()) and bool((state["exp_avg_sq"][~p.mask] == 0).all())


def test_export_load_round_trip_gives_identical_predictions(registry: Registry, tmp_path: Path) -> None:
    model, x = models.make("cnn_bn", batch=16)
    comp = Compression(model, schedule=("geometric", {"target": 0.7, "rounds": 2}),
                       quantizer=("lsq", {"bits": 3}), prune_every=2, registry=registry)
    comp.attach()
    _loop(comp, model, x, steps=6)
    model.eval()
    report = comp.export(tmp_path / "model.safetensors")
    assert report is not None
    fresh = squeezer.load(tmp_path / "model.safetensors", models.cnn_bn())
    with torch.no_grad():
        assert torch.allclose(model(x), fresh(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(_labels(model, x), _labels(fresh, x))


def test_mutual_step_keeps_the_important_unimportant_split(registry: Registry) -> None:
    model, x = models.make("cnn_bn", batch=8)
    y = torch.arange(8) % 4
    comp = Compression(model, schedule=("one_shot", {"target": 0.6}), quantizer=("lsq", {"bits": 4}),
                       distillation=("hinton", {"temperature": 2.0}), prune_every=1, registry=registry)
    comp.attach()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    _loop(comp, model, x, steps=1)
    assert comp.done
    model.zero_grad(set_to_none=True)
    teacher = comp.self_teacher(optimizer)
    assert teacher.params and all(any(p is q for g in optimizer.param_groups for q in g["params"])
                                  for p in teacher.parameters())
    masks = compress.masks(model)
    originals = {path: compress.original(model, path) for path in masks}

    # the student's loss reaches only kept entries, the teacher's only pruned ones
    nn.functional.cross_entropy(model(x), y).backward()
    for path, w in originals.items():
        assert w.grad is not None and bool((w.grad[~masks[path]] == 0).all())
    model.zero_grad()
    nn.functional.cross_entropy(teacher(x), y).backward()
    for path, w in originals.items():
        assert w.grad is not None and bool((w.grad[masks[path]] == 0).all())
    model.zero_grad()

    # one mutual step: the student's weights move only where kept, the teacher's only where pruned
    before = {path: w.detach().clone() for path, w in originals.items()}
    s_logits, t_logits = model(x), teacher(x)
    loss = comp.mutual_loss(s_logits, t_logits, y)
    optimizer.zero_grad()
    loss.backward()
    student_grads = {path: w.grad.clone() for path, w in originals.items() if w.grad is not None}
    optimizer.step()
    moved_pruned = False
    for path, w in originals.items():
        assert torch.equal(compress.masks(model)[path], masks[path])
        changed = w.detach() != before[path]
        assert bool((changed <= (student_grads[path] != 0)).all())
        moved_pruned |= bool(changed[~masks[path]].any())
        with view(model, "student"):
            module, attr = path.rsplit(".", 1)
            assert bool((getattr(model.get_submodule(module), attr)[~masks[path]] == 0).all())
    assert moved_pruned  # the unimportant weights were trained (by the teacher's loss)
    assert comp.sparsity == pytest.approx(0.6, abs=0.01)


def test_gradient_importance_uses_last_backward(registry: Registry) -> None:
    seen: list[torch.Tensor | None] = []

    import attrs

    @attrs.frozen
    class GradMag:
        """|grad|."""

        needs_gradients = True

        def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
            seen.append(grad)
            assert grad is not None
            return grad.abs().float()

    reg = Registry()
    for info in registry:
        reg.add(info.kind, info.name, info.cls)
    reg.add_importance("gradmag", GradMag)
    model, x = models.make("mlp", batch=4)
    comp = Compression(model, importance="gradmag", schedule=("one_shot", {"target": 0.5}), registry=reg)
    comp.attach()
    with pytest.raises(PluginError, match="needs gradients"):
        comp.prune_round()
    model(x).sum().backward()
    comp.prune_round()
    assert seen and all(g is not None for g in seen)
    assert comp.sparsity == pytest.approx(0.5, abs=0.01)


def test_bad_arguments_name_the_argument(registry: Registry) -> None:
    model, _ = models.make("mlp")
    with pytest.raises(UnknownStrategyError, match="importance: unknown importance 'l3'"):
        Compression(model, importance="l3", registry=registry)
    with pytest.raises(ConfigError, match="quantizer: quantizer 'lsq'"):
        Compression(model, quantizer=("lsq", {"bits": 1}), registry=registry)
    with pytest.raises(ConfigError, match="prune_every: must be a non-negative integer"):
        Compression(model, prune_every=-1, registry=registry)
    with pytest.raises(ConfigError, match="prune_start"):
        Compression(model, prune_start=True, registry=registry)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"quantizer.overrides\[0\]: quantizer 'lsq'"):
        Compression(model, quantizer=QuantizerChoice(name="lsq", overrides=(QuantizerOverride(
            pattern="@first", options={"bits": 1}),)), registry=registry)
    comp = Compression(model, schedule=("one_shot", {"target": 0.5}), registry=registry)
    comp.prune_round()  # attaches on first use
    with pytest.raises(ConfigError, match="rounds have run"):
        comp.prune_round()


@pytest.mark.parametrize(("start", "every", "expected"), [
    (None, 3, [3, 6, 9]),   # default: train prune_every steps, then prune
    (0, 3, [0, 3, 6]),      # a recipe's prune stage: prune first, then train
    (2, 0, [2, 2, 2]),      # epochs_per_round = 0: every round at once
    (0, 0, [0, 0, 0]),
])
def test_rounds_run_at_prune_start_plus_r_times_prune_every(
    start: int | None, every: int, expected: list[int], registry: Registry
) -> None:
    model, _ = models.make("mlp", batch=8)
    comp = Compression(model, schedule=("geometric", {"target": 0.8, "rounds": 3}), prune_every=every,
                       prune_start=start, registry=registry)
    comp.attach()
    ran_at: list[int] = []
    for step in range(12):
        before = comp.rounds_done
        if step == 0:
            comp.prune_due()  # before the first step: counts nothing
            assert comp.steps == 0
        else:
            comp.step()
        ran_at += [comp.steps] * (comp.rounds_done - before)
    assert ran_at == expected and comp.done and comp.next_round_at is None
    assert comp.sparsity == pytest.approx(0.8, abs=0.01)


def test_quantizer_overrides_as_in_a_recipe(registry: Registry) -> None:
    model, x = models.make("conv1d_net", batch=8)
    choice = QuantizerChoice(name="lsq", options={"bits": 4}, overrides=(
        QuantizerOverride(pattern="@first", options={"bits": 8}),
        QuantizerOverride(pattern="@last", skip=True),
    ))
    comp = Compression(model, schedule=("one_shot", {"target": 0.5}), quantizer=choice, prune_every=1,
                       registry=registry)
    _loop(comp, model, x, steps=2)
    paths = [path for path, _ in compressed_weights(model)]
    expected = {path: 4 for path in paths[1:-1]} | {paths[0]: 8}
    assert comp.bits == expected and len(paths) >= 3


def test_phase2_starts_with_fresh_optimizer_state(registry: Registry) -> None:
    """Adam's first Phase 2 update of an unimportant weight is about the learning rate, as with
    the pipeline's new optimizer, not ~3x it (a Phase 1 step count beside moments that
    forget_pruned zeroed used to skip the bias correction)."""
    model, x = models.make("mlp", batch=8)
    comp = Compression(model, importance="l1", schedule=("one_shot", {"target": 0.5}), prune_every=2,
                       min_density=0.0, registry=registry)
    comp.attach()
    lr = 0.01
    optimizer = _loop(comp, model, x, steps=1500, lr=lr)  # Adam's second-moment correction ~1 by then
    assert comp.done
    teacher = comp.self_teacher(optimizer)
    path = next(p for p, _ in compressed_weights(model))
    stored, mask = compress.original(model, path), compress.masks(model)[path]
    before = stored.detach().clone()
    y = torch.arange(x.shape[0]) % 4
    loss = comp.mutual_loss(model(x), teacher(x), y, kd_weight=0.0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    moved = (stored.detach() - before)[~mask].abs()
    moved = moved[moved > 0]
    assert moved.numel() > 0
    assert float(moved.max()) <= lr * 1.01  # Adam's first step: |update| = lr (bias-corrected)


def test_pruned_weights_get_no_weight_decay_in_phase1(registry: Registry) -> None:
    """With decay in the user's optimizer, the unimportant (pruned) entries of the stored weights
    kept shrinking after a round in a user's loop (the pipeline turned decay off for them); now the
    stored weights move to a group without decay at the first round, other settings kept."""
    model, x = models.make("mlp", batch=8)
    comp = Compression(model, importance="l1", schedule=("one_shot", {"target": 0.5}), prune_every=1,
                       min_density=0.0, registry=registry)
    comp.attach()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
    y = torch.arange(x.shape[0]) % 4

    def train(steps: int) -> None:
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            comp.step(optimizer)

    train(1)
    assert comp.done
    path = next(p for p, _ in compressed_weights(model))
    stored, mask = compress.original(model, path), compress.masks(model)[path]
    unimportant = stored.detach()[~mask].clone()
    train(20)
    assert torch.equal(stored.detach()[~mask], unimportant)  # no step and no decay touches them
    groups = [g for g in optimizer.param_groups if any(p is stored for p in g["params"])]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0 and groups[0]["lr"] == 0.01
    others = [g for g in optimizer.param_groups if g["params"] and not any(p is stored for p in g["params"])]
    assert all(g["weight_decay"] == 0.5 for g in others if not g.get("squeezer_no_decay"))
