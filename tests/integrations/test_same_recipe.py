"""One recipe file, three trainers: Lightning's, Hugging Face's and a plain loop with Compression.

The schedules are made identical (plain SGD at a constant LR, no gradient clipping, the same data
order and step count, the same initial weights), so the three runs give the same masks and weights.
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
from torch.utils.data import DataLoader, Dataset

import squeezer
from squeezer import compress
from squeezer.compress.targets import Targets
from squeezer.integrations.lightning import SqueezerCallback
from squeezer.integrations.transformers import SqueezerTrainerCallback
from squeezer.registry import Registry
from squeezer.session import Compression

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning",
                                        "ignore::DeprecationWarning")

RECIPE = """
[model]
factory = "unused:unused"
[data]
factory = "unused:unused"
[targets]
types = ["Linear"]
[[stages]]
type = "prune"
importance = "l1"
scheduler = { name = "geometric", target = 0.6, rounds = 2 }
epochs_per_round = 1
min_density = 0.0
"""
LR, EPOCHS, BATCH = 0.05, 2, 16  # 64 samples: 4 steps per epoch, rounds after steps 4 and 8


@pytest.fixture(scope="module")
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


class Net(nn.Module):
    """A plain module; ``forward`` also returns the loss when given labels (what HF's Trainer reads)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.body(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class Samples(Dataset):
    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 16, generator=g)
        self.y = (self.x[:, :4].argmax(1) + (self.x[:, 4] > 0).long()) % 4

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def loader() -> DataLoader:
    return DataLoader(Samples(), batch_size=BATCH, shuffle=False)  # the same order everywhere


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR)


def plain_loop(registry: Registry) -> Net:
    net = Net()
    # what the recipe's prune stage says, spelled as Compression arguments
    comp = Compression(net, targets=Targets(types=("Linear",)), importance="l1",
                       schedule=("geometric", {"target": 0.6, "rounds": 2}), min_density=0.0,
                       prune_every=len(loader()), registry=registry)
    comp.attach()
    optimizer = sgd(net)
    for _ in range(EPOCHS):
        for batch in loader():
            loss = net(**batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            comp.step(optimizer)
    assert comp.done
    return net


class LitNet(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.net(**batch)["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return sgd(self)


def lightning_run(recipe: Path, registry: Registry) -> Net:
    module = LitNet()
    callback = SqueezerCallback(recipe, module="net", registry=registry)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         deterministic=True)
    trainer.fit(module, loader())
    assert callback.compression.done and callback.compression.prune_every == 4
    return module.net


class FixedOrderTrainer(transformers.Trainer):
    """HF's Trainer with the same (unshuffled) data loader as the other two runs."""

    def get_train_dataloader(self) -> DataLoader:
        return loader()


def hf_run(recipe: Path, registry: Registry, tmp_path: Path) -> Net:
    net = Net()
    callback = SqueezerTrainerCallback(recipe, registry=registry)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
        max_grad_norm=0.0, save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no",
        disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )
    optimizer = sgd(net)  # the parameter objects stay the same when the masks are attached
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    trainer = FixedOrderTrainer(model=net, args=args, train_dataset=Samples(), callbacks=[callback],
                                optimizers=(optimizer, constant))
    trainer.train()
    assert callback.compression.done and callback.compression.prune_every == 4
    return net


def test_same_recipe_same_masks_in_lightning_hf_and_a_plain_loop(
    recipe_file: Path, registry: Registry, tmp_path: Path
) -> None:
    plain = plain_loop(registry)
    lit = lightning_run(recipe_file, registry)
    hf = hf_run(recipe_file, registry, tmp_path)
    reference = compress.masks(plain)
    assert len(reference) == 3
    for name, net in (("lightning", lit), ("transformers", hf)):
        masks = compress.masks(net)
        assert masks.keys() == reference.keys(), name
        for key, mask in reference.items():
            assert torch.equal(masks[key], mask), f"{name}: {key}"
        for (key, a), (_, b) in zip(plain.state_dict().items(), net.state_dict().items(), strict=True):
            torch.testing.assert_close(b.float(), a.float(), rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
    kept = sum(int(m.sum()) for m in reference.values()) / sum(m.numel() for m in reference.values())
    assert 1 - kept == pytest.approx(0.6, abs=0.01)
