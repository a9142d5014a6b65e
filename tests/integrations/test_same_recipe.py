"""One recipe file, four ways to run it: ``squeezer run``, the Lightning callback, the Hugging Face
callback, and a plain loop with :class:`~squeezer.session.Compression`.

The callbacks lay the recipe's stages on the trainer's epochs as the pipeline does (dense
epochs, a pruning round before each round's QAT epochs, then Phase 2's warm-up and mutual
epochs). With the trainers' schedules made identical to the recipe's (plain SGD at a constant LR,
no gradient clipping, the same data order and initial weights), the four artifacts are the same
file content: the same masks, codes and step sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
pytest.importorskip("lightning")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import lightning.pytorch as pl
import torch
import transformers
from torch import nn
from torch.utils.data import DataLoader
from typer.testing import CliRunner

import squeezer
from squeezer.artifact.reader import read
from squeezer.cli import app
from squeezer.compress.targets import Targets
from squeezer.integrations.lightning import SqueezerCallback
from squeezer.integrations.transformers import SqueezerTrainer, SqueezerTrainerCallback
from squeezer.recipe.configs import QuantizerChoice, QuantizerOverride
from squeezer.registry import Registry
from squeezer.session import Compression

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning",
                                        "ignore::DeprecationWarning")

LR = 0.05
RECIPE = f"""
seed = 0
[model]
factory = "same_recipe_task:make_model"
[data]
factory = "same_recipe_task:make_loaders"
[training]
optimizer = "sgd"
lr = {LR}
momentum = 0.0
lr_schedule = "constant"
[targets]
types = ["Linear"]
[[stages]]
type = "train"
epochs = 1
[[stages]]
type = "prune"
importance = "l1"
scheduler = {{ name = "geometric", target = 0.6, rounds = 2 }}
quantizer = {{ name = "lsq", bits = 4, overrides = [{{ pattern = "@first", bits = 8 }}] }}
epochs_per_round = 1
min_density = 0.0
[[stages]]
type = "mutual"
warmup_epochs = 1
epochs = 1
kd_weight = 0.5
distillation = {{ name = "hinton", temperature = 2.0 }}
"""
EPOCHS = 5  # 1 dense + 2 rounds x 1 QAT epoch + 1 warm-up + 1 mutual


@pytest.fixture(scope="module")
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


@pytest.fixture
def task(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(str(HERE))  # the recipe's factories: same_recipe_task:<name>
    import same_recipe_task

    return same_recipe_task


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR)


def cli_run(recipe: Path, out: Path) -> Path:
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "model.safetensors"


def plain_loop(task: object, registry: Registry, path: Path) -> Path:
    """What the recipe says, spelled as Compression arguments and a hand-written loop."""
    net = task.Net()  # type: ignore[attr-defined]
    steps = len(task.dict_loader())  # type: ignore[attr-defined]
    quantizer = QuantizerChoice(name="lsq", options={"bits": 4},
                                overrides=(QuantizerOverride(pattern="@first", options={"bits": 8}),))
    comp = Compression(net, targets=Targets(types=("Linear",)), importance="l1",
                       schedule=("geometric", {"target": 0.6, "rounds": 2}), quantizer=quantizer,
                       distillation=("hinton", {"temperature": 2.0}), min_density=0.0,
                       prune_start=1 * steps, prune_every=1 * steps, registry=registry)
    comp.attach()
    optimizer = sgd(net)
    teacher = None
    for epoch in range(EPOCHS):
        if epoch == 3:  # Phase 2 after the dense epoch and both rounds' QAT epochs
            assert comp.done
            teacher = comp.self_teacher(optimizer)
        for batch in task.dict_loader():  # type: ignore[attr-defined]
            if teacher is None:
                loss = net(**batch)["loss"]
            else:
                kd_weight = 0.5 if epoch >= 4 else 0.0  # one warm-up epoch
                loss = comp.mutual_loss(net(batch["x"]), teacher(batch["x"]), batch["labels"], kd_weight=kd_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            comp.step(optimizer)
    comp.export(path)
    return path


def lightning_run(task: object, recipe: Path, registry: Registry, path: Path) -> Path:
    class LitNet(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = task.Net()  # type: ignore[attr-defined]

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            squeezer_cb = SqueezerCallback.of(self.trainer)
            if squeezer_cb.teacher is None:
                return self.net(**batch)["loss"]
            x = batch["x"]
            return squeezer_cb.mutual_loss(self.net(x), squeezer_cb.teacher(x), batch["labels"])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return sgd(self)

    module = LitNet()
    callback = SqueezerCallback(recipe, module="net", export=path, registry=registry)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         deterministic=True)
    trainer.fit(module, task.dict_loader())  # type: ignore[attr-defined]
    comp = callback.compression
    assert comp.done and (comp.prune_start, comp.prune_every) == (4, 4) and callback.teacher is not None
    return path


def hf_run(task: object, recipe: Path, registry: Registry, tmp_path: Path) -> Path:
    class FixedOrderTrainer(SqueezerTrainer):
        """The same (unshuffled) data loader as the other runs."""

        def get_train_dataloader(self) -> DataLoader:
            return task.dict_loader()  # type: ignore[attr-defined,no-any-return]

    net = task.Net()  # type: ignore[attr-defined]
    path = tmp_path / "hf.safetensors"
    callback = SqueezerTrainerCallback(recipe, export=path, registry=registry)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=EPOCHS, per_device_train_batch_size=16,
        max_grad_norm=0.0, save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no",
        disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )
    optimizer = sgd(net)  # the parameter objects stay the same when the masks are attached
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    trainer = FixedOrderTrainer(model=net, args=args, train_dataset=task.Samples(),  # type: ignore[attr-defined]
                                callbacks=[callback], optimizers=(optimizer, constant))
    trainer.train()
    assert callback.compression.done and callback.teacher is not None
    return path


def test_one_recipe_gives_the_same_artifact_through_the_cli_lightning_hf_and_a_plain_loop(
    task: object, registry: Registry, tmp_path: Path
) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    reference = read(cli_run(recipe, tmp_path / "cli"))
    layers = {layer["path"]: layer for layer in reference.meta["layers"]}
    assert {path: layer["bits"] for path, layer in layers.items()} == {
        "body.0.weight": 8, "body.2.weight": 4, "body.4.weight": 4}
    kept = sum(layer["nnz"] for layer in layers.values()) / sum(layer["numel"] for layer in layers.values())
    assert 1 - kept == pytest.approx(0.6, abs=0.01)
    others = {
        "lightning": lightning_run(task, recipe, registry, tmp_path / "lightning.safetensors"),
        "transformers": hf_run(task, recipe, registry, tmp_path),
        "plain loop": plain_loop(task, registry, tmp_path / "plain.safetensors"),
    }
    for name, path in others.items():
        art = read(path)
        assert art.meta["layers"] == reference.meta["layers"], name  # masks' codes, bits, offsets
        assert art.tensors.keys() == reference.tensors.keys(), name
        for key, tensor in reference.tensors.items():
            assert torch.equal(art.tensors[key], tensor), f"{name}: {key}"
