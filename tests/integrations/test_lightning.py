"""squeezer.integrations.lightning: the callback in a real (tiny, CPU) Lightning fit."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import squeezer
from squeezer import compress
from squeezer.compress.weight import view
from squeezer.errors import ConfigError
from squeezer.integrations.lightning import SqueezerCallback
from squeezer.recipe import MutualStage, parse_recipe
from squeezer.registry import Registry
from squeezer.session import Compression
from squeezer.testing import models

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


def _data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0].mean((1, 2)) > 0).long()
    return TensorDataset(x, y)


def _loader() -> DataLoader:
    return DataLoader(_data(), batch_size=16, shuffle=False)  # deterministic order


class Classifier(pl.LightningModule):
    """A user's module: the network in ``self.net``; Phase 2 through the callback's teacher."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.net = models.cnn_bn()
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        sq = SqueezerCallback.of(self.trainer)
        if sq.teacher is None:
            return nn.functional.cross_entropy(logits, y)
        return sq.mutual_loss(logits, sq.teacher(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def _trainer(callback: SqueezerCallback, epochs: int, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, callbacks=[callback], logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      deterministic=True, **kwargs)  # type: ignore[arg-type]


def _fit(callback: SqueezerCallback, epochs: int, module: Classifier | None = None, **kwargs: object) -> Classifier:
    pl.seed_everything(0, verbose=False)
    module = module or Classifier()
    _trainer(callback, epochs, **kwargs).fit(module, _loader())
    return module


def test_prunes_quantizes_exports_and_reloads(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    module = Classifier()
    comp = Compression(module.net, importance="l1", schedule=("geometric", {"target": 0.8, "rounds": 3}),
                       quantizer=("lsq", {"bits": 4}), prune_every=4, min_density=0.0, registry=registry)
    callback = SqueezerCallback(comp, export=path)
    _fit(callback, epochs=4, module=module)  # 16 steps: rounds after steps 4, 8, 12
    assert callback.compression is comp and comp.done and comp.rounds_done == 3
    assert comp.sparsity == pytest.approx(0.8, abs=0.01)
    assert comp.bits and set(comp.bits.values()) == {4}
    # the step sizes joined the trainer's optimizer
    optimizer = module.trainer.optimizers[0]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in module.parameters())
    assert path.exists()
    fresh = squeezer.load(path, models.cnn_bn())
    module.eval()
    x = _data().tensors[0]
    with torch.no_grad():
        expected, got = module(x), fresh(x)
    assert torch.allclose(expected, got, rtol=1e-5, atol=1e-6)
    assert torch.equal(expected.argmax(-1), got.argmax(-1))


def test_same_masks_as_a_plain_loop(registry: Registry) -> None:
    def make(net: nn.Module) -> Compression:
        return Compression(net, importance="l1", schedule=("geometric", {"target": 0.7, "rounds": 2}),
                           prune_every=3, min_density=0.0, registry=registry)

    # plain loop, the same data order, optimizer and seed as the Lightning run
    pl.seed_everything(0, verbose=False)
    plain = Classifier()
    comp = make(plain.net)
    comp.attach()
    optimizer = plain.configure_optimizers()
    for _ in range(2):
        for x, y in _loader():
            loss = nn.functional.cross_entropy(plain(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            comp.step(optimizer)

    module = Classifier()
    callback = SqueezerCallback(make(module.net))
    _fit(callback, epochs=2, module=module)
    # same starting weights (cnn_bn is seeded), same steps: same masks, and the same weights
    plain_masks, lit_masks = compress.masks(plain.net), compress.masks(module.net)
    assert plain_masks.keys() == lit_masks.keys()
    assert all(torch.equal(plain_masks[k], lit_masks[k]) for k in plain_masks)
    assert callback.compression.sparsity == pytest.approx(0.7, abs=0.01)
    for (name, a), (_, b) in zip(plain.net.state_dict().items(), module.net.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


RECIPE = """
[model]
factory = "squeezer.testing.models:cnn_bn"
[data]
factory = "unused:unused"
[targets]
types = ["Conv2d", "Linear"]
[[stages]]
type = "prune"
importance = "l1"
scheduler = { name = "geometric", target = 0.6, rounds = 2 }
quantizer = { name = "lsq", bits = 3 }
epochs_per_round = 1
min_density = 0.0
[[stages]]
type = "mutual"
warmup_epochs = 1
kd_weight = 0.5
distillation = { name = "hinton", temperature = 2.0 }
"""


def test_recipe_with_mutual_phase_trains_the_teachers_pruned_weights(registry: Registry, tmp_path: Path) -> None:
    recipe = parse_recipe(RECIPE, registry=registry)
    callback = SqueezerCallback(recipe, module="net", export=tmp_path / "m.safetensors", registry=registry)
    module = Classifier()
    seen_masks: dict[str, torch.Tensor] = {}
    seen_weights: dict[str, torch.Tensor] = {}
    seen_epoch: list[int] = []
    seen_kd: list[float] = []

    class Probe(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if callback.teacher is not None and not seen_epoch:  # Phase 2 has just begun
                seen_masks.update(compress.masks(module.net))
                seen_weights.update({p: compress.original(module.net, p).detach().clone() for p in seen_masks})
                seen_epoch.append(trainer.current_epoch)
            seen_kd.append(callback.kd_weight)

    pl.seed_everything(0, verbose=False)
    # as `squeezer run` lays the recipe out: rounds before epochs 0 and 1 (each followed by one QAT
    # epoch), 2: Phase 2 warm-up; 3: mutual KD
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=4, callbacks=[callback, Probe()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, _loader())
    comp = callback.compression
    assert comp.prune_every == 4 and comp.done and comp.sparsity == pytest.approx(0.6, abs=0.01)
    assert set(comp.bits.values()) == {3}
    assert seen_epoch == [2] and seen_kd == [0.0, 0.0, 0.0, 0.5]
    assert callback.teacher is not None
    teacher_params = {id(p) for p in callback.teacher.parameters()}
    groups = trainer.optimizers[0].param_groups
    assert teacher_params <= {id(p) for g in groups for p in g["params"]}
    # masks frozen in Phase 2; the teacher's (pruned) entries trained; the student's still zero
    masks, before = seen_masks, seen_weights
    moved_pruned = False
    for path, mask in masks.items():
        assert torch.equal(compress.masks(module.net)[path], mask)
        w = compress.original(module.net, path).detach()
        moved_pruned |= bool((w != before[path])[~mask].any())
        with view(module.net, "student"):
            owner, attr = path.rsplit(".", 1)
            assert bool((getattr(module.net.get_submodule(owner), attr)[~mask] == 0).all())
    assert moved_pruned
    fresh = squeezer.load(tmp_path / "m.safetensors", models.cnn_bn())
    module.eval()
    x = _data().tensors[0]
    with torch.no_grad():
        assert torch.allclose(module(x), fresh(x), rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_counts_optimizer_steps(registry: Registry) -> None:
    module = Classifier()
    comp = Compression(module.net, schedule=("geometric", {"target": 0.5, "rounds": 2}), prune_every=2,
                       registry=registry)
    callback = SqueezerCallback(comp)
    _fit(callback, epochs=1, module=module, accumulate_grad_batches=2)  # 4 batches: 2 optimizer steps
    assert comp.steps == 2 and comp.rounds_done == 1


def test_teacher_never_called_warns(registry: Registry) -> None:
    class Plain(Classifier):
        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

    module = Plain()
    comp = Compression(module.net, schedule=("one_shot", {"target": 0.5}), prune_every=4, registry=registry)
    callback = SqueezerCallback(comp, mutual=MutualStage(warmup_epochs=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(callback, epochs=2, module=module)
    assert any("never called callback.teacher" in str(w.message) for w in caught)


def test_a_trainer_shorter_than_the_recipe_warns(registry: Registry) -> None:
    recipe = parse_recipe(RECIPE, registry=registry)  # 2 rounds x 1 epoch, then 1 + 1 epochs of Phase 2
    callback = SqueezerCallback(recipe, module="net", registry=registry)
    with pytest.warns(UserWarning, match="the recipe's stages span 4 epochs but the trainer runs 1"):
        _fit(callback, epochs=1)
    # round 0 ran before the first step, round 1 after the last (where the pipeline's epoch 1 would start)
    assert callback.compression.rounds_done == 2 and callback.teacher is None


def test_bad_arguments(registry: Registry) -> None:
    comp = Compression(models.cnn_bn(), registry=registry)
    with pytest.raises(ConfigError, match="prune_every"):
        SqueezerCallback(comp, prune_every=3)
    with pytest.raises(ConfigError, match="not part of the trained model"):
        _fit(SqueezerCallback(comp), epochs=1)
    mutual_not_last = parse_recipe(RECIPE + '[[stages]]\ntype = "train"\n', registry=registry)
    with pytest.raises(ConfigError, match=r"stages\[1\] \(mutual\): .* must be the last stage"):
        SqueezerCallback(mutual_not_last)
    distill = parse_recipe(RECIPE.split('[[stages]]\ntype = "mutual"')[0]
                           + '[[stages]]\ntype = "distill"\n', registry=registry)
    with pytest.raises(ConfigError, match=r"stages\[1\] \(distill\): .*not 'distill'; run this recipe with"):
        SqueezerCallback(distill)


def test_squeezer_does_not_import_lightning() -> None:
    code = ("import sys, squeezer, squeezer.integrations; from squeezer.session import Compression; "
            "assert 'lightning' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/integrations.md's Lightning block (skipped by the docs test, which lacks Lightning)."""
    monkeypatch.chdir(tmp_path)
    text = (Path(__file__).resolve().parents[2] / "docs" / "integrations.md").read_text(encoding="utf-8")
    code = next(b.split("```", 1)[0] for b in text.split("```python\n")[1:] if "lightning" in b.split("```", 1)[0])
    exec(compile(code, "integrations.md (lightning)", "exec"), {"__name__": "__docs__"})


BUDGET_RECIPE = RECIPE.replace("epochs_per_round = 1", "share = 0.5").replace(
    "warmup_epochs = 1", "share = 0.25\nwarmup_share = 0.25").replace("[targets]", "[budget]\nepochs = 4\n[targets]")


def test_a_recipe_with_a_budget_runs_as_its_resolved_epochs(registry: Registry) -> None:
    """Shares of a 4-epoch budget resolve to RECIPE's epochs (2 rounds x 1, then 1 + 1 of Phase 2)
    once the trainer's epoch length is known: the rounds, Phase 2's start and its KD weight fall
    where they fall for RECIPE, and the callback state saves and checks."""
    runs = {}
    for name, text in (("epochs", RECIPE), ("budget", BUDGET_RECIPE)):
        callback = SqueezerCallback(parse_recipe(text, registry=registry), module="net", registry=registry)
        kd: list[float] = []

        class Probe(pl.Callback):
            def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                kd.append(callback.kd_weight)  # noqa: B023 (read in this iteration's fit)

        pl.seed_everything(0, verbose=False)
        module = Classifier()
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=4, callbacks=[callback, Probe()], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, _loader())
        comp = callback.compression
        state = callback.state_dict()
        callback._core.check_saved(state)
        runs[name] = (comp.prune_start, comp.prune_every, comp.rounds_done, kd, callback.teacher is not None,
                      compress.masks(module.net))
    epochs, budget = runs["epochs"], runs["budget"]
    assert budget[:5] == epochs[:5] == (0, 4, 2, [0.0, 0.0, 0.0, 0.5], True)
    assert all(torch.equal(budget[5][k], epochs[5][k]) for k in epochs[5])
