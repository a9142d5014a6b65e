"""SqueezerCallback: ``trainer.fit(..., ckpt_path=...)`` resumes a run from Lightning's own checkpoint.

One recipe (2 dense epochs, 2 pruning rounds with LSQ, Phase 2 with a warm-up epoch) on 6 epochs of
4 steps, with Adam (weight decay, so Phase 2 adds a no-decay group) and a per-epoch LR schedule.
A run resumed in a fresh module, callback and trainer from a checkpoint before any pruning,
between the two rounds (a run that really stopped there) or in Phase 2 ends bitwise equal to the
uninterrupted run: masks, step sizes, weights, the teacher's copies, the optimizer's groups and the
artifact. The data order is fixed and nothing in the model draws random numbers, so the runs are
deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import squeezer
from squeezer import compress
from squeezer.artifact.reader import read
from squeezer.compress.weight import compressed_weights
from squeezer.errors import ConfigError
from squeezer.integrations.lightning import SqueezerCallback
from squeezer.recipe import parse_recipe
from squeezer.registry import Registry
from squeezer.testing import models

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning")

EPOCHS = 6
RECIPE = """
[model]
factory = "squeezer.testing.models:cnn_bn"
[data]
factory = "unused:unused"
[targets]
types = ["Conv2d", "Linear"]
[[stages]]
type = "train"
epochs = 2
[[stages]]
type = "prune"
importance = "l1"
scheduler = { name = "geometric", target = TARGET, rounds = 2 }
quantizer = { name = "lsq", bits = 3 }
epochs_per_round = 1
min_density = 0.0
[[stages]]
type = "mutual"
warmup_epochs = 1
epochs = 1
kd_weight = 0.5
distillation = { name = "hinton", temperature = 2.0 }
"""
# epochs 0-1 dense; round 0 after step 8 (the end of epoch 1), QAT; round 1 after step 12, QAT;
# epoch 4: Phase 2 warm-up; epoch 5: mutual distillation


@pytest.fixture(scope="module")
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


def _loader(batch_size: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0].mean((1, 2)) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = models.cnn_bn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        sq = SqueezerCallback.of(self.trainer)
        if sq.teacher is None:
            return nn.functional.cross_entropy(self(x), y)
        return sq.mutual_loss(self(x), sq.teacher(x), y)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.9 ** epoch)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class Run:
    """One fit: the module, the callback, the trainer and where its checkpoints and artifact are."""

    def __init__(self, registry: Registry, out: Path, *, target: float = 0.6, epochs: int = EPOCHS,
                 ckpt: Path | None = None, batch_size: int = 16) -> None:
        self.out = out
        pl.seed_everything(0, verbose=False)
        self.module = Classifier()
        recipe = parse_recipe(RECIPE.replace("TARGET", str(target)), registry=registry)
        self.callback = SqueezerCallback(recipe, module="net", export=out / "model.safetensors", registry=registry)
        every_epoch = pl.callbacks.ModelCheckpoint(dirpath=out, filename="{epoch}", save_top_k=-1, save_last=True)
        self.trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, deterministic=True,
                                  callbacks=[self.callback, every_epoch], enable_progress_bar=False,
                                  enable_model_summary=False)
        self.trainer.fit(self.module, _loader(batch_size), ckpt_path=ckpt)


@pytest.fixture(scope="module")
def uninterrupted(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(registry, tmp_path_factory.mktemp("uninterrupted"))


def _assert_same(resumed: Run, reference: Run) -> None:
    a, b = resumed.callback, reference.callback
    assert (a.compression.steps, a.compression.rounds_done) == (b.compression.steps, b.compression.rounds_done) == (
        24, 2)
    masks, expected = compress.masks(resumed.module.net), compress.masks(reference.module.net)
    assert masks.keys() == expected.keys() and all(torch.equal(masks[k], expected[k]) for k in masks)
    steps = {p: q.quantizer.step for p, q in compressed_weights(resumed.module.net)}  # type: ignore[union-attr]
    assert steps and all(torch.equal(steps[p], q.quantizer.step)  # type: ignore[union-attr]
                         for p, q in compressed_weights(reference.module.net))
    state, expected = resumed.module.state_dict(), reference.module.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state), [k for k in state if not torch.equal(
        state[k], expected[k])]
    assert a.teacher is not None and b.teacher is not None
    teacher, expected = a.teacher.state_dict(), b.teacher.state_dict()
    assert teacher.keys() == expected.keys() and all(torch.equal(teacher[k], expected[k]) for k in teacher)
    groups, ref_groups = resumed.trainer.optimizers[0].param_groups, reference.trainer.optimizers[0].param_groups
    assert [(len(g["params"]), g["weight_decay"], g["lr"]) for g in groups] == [
        (len(g["params"]), g["weight_decay"], g["lr"]) for g in ref_groups]
    assert len(groups) == 3  # the user's, the stored weights and quantizer steps without decay, the teacher's
    art, ref = read(resumed.out / "model.safetensors"), read(reference.out / "model.safetensors")
    assert art.meta["layers"] == ref.meta["layers"] and art.tensors.keys() == ref.tensors.keys()
    assert all(torch.equal(art.tensors[k], ref.tensors[k]) for k in ref.tensors)


def test_resumes_between_the_pruning_rounds(registry: Registry, uninterrupted: Run, tmp_path: Path) -> None:
    stopped = Run(registry, tmp_path / "stopped", epochs=2)  # stops after round 0 (and before round 1)
    comp = stopped.callback.compression
    assert comp.rounds_done == 1 and comp.bits and stopped.callback.teacher is None
    resumed = Run(registry, tmp_path / "resumed", ckpt=stopped.out / "last.ckpt")
    _assert_same(resumed, uninterrupted)


@pytest.mark.parametrize("epoch", [0, 4], ids=["before-any-pruning", "phase2-after-warmup"])
def test_resumes_before_pruning_and_in_phase2(registry: Registry, uninterrupted: Run, tmp_path: Path,
                                              epoch: int) -> None:
    ckpt = uninterrupted.out / f"epoch={epoch}.ckpt"
    saved = torch.load(ckpt, weights_only=True)["callbacks"]
    state = next(v for k, v in saved.items() if k.startswith("SqueezerCallback"))
    assert state["rounds_done"] == (0 if epoch == 0 else 2) and (state["teacher"] is not None) == (epoch == 4)
    _assert_same(Run(registry, tmp_path, ckpt=ckpt), uninterrupted)


def test_other_settings_are_refused_naming_what_differs(registry: Registry, uninterrupted: Run,
                                                        tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Run(registry, tmp_path, target=0.7, ckpt=uninterrupted.out / "epoch=1.ckpt")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("SqueezerCallback: cannot resume: the checkpoint was written with other settings: "
                              "schedule (checkpoint [")
    assert "now [" in message
    # 8 steps per epoch instead of 4: the recipe's rounds would fall on other optimizer steps
    with pytest.raises(ConfigError, match=r"cannot resume: the pruning rounds fall on other optimizer steps: "
                                          r"prune_start \(checkpoint 8, now 16\); prune_every \(checkpoint 4, now 8\)"):
        Run(registry, tmp_path / "batches", batch_size=8, ckpt=uninterrupted.out / "epoch=1.ckpt")


def test_a_checkpoint_without_the_callbacks_state_is_refused(registry: Registry, uninterrupted: Run,
                                                             tmp_path: Path) -> None:
    checkpoint = torch.load(uninterrupted.out / "epoch=1.ckpt", weights_only=True)
    checkpoint["callbacks"] = {k: v for k, v in checkpoint["callbacks"].items() if not k.startswith("Squeezer")}
    torch.save(checkpoint, tmp_path / "stripped.ckpt")
    with pytest.raises(ConfigError, match="the checkpoint has no SqueezerCallback state"):
        Run(registry, tmp_path / "run", ckpt=tmp_path / "stripped.ckpt")
