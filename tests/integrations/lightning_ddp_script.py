"""Run by test_lightning_ddp.py: SqueezerCallback under Lightning's DDP strategy, 2 CPU ranks (gloo).

``python lightning_ddp_script.py OUT``; Lightning relaunches this script for rank 1. Every rank
writes ``OUT/rank{r}.json`` (hashes of its masks and weights, sparsity, bits); rank 0 also writes
its predictions on the data (``OUT/predictions.pt``) and the artifact (``OUT/model.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import squeezer
from squeezer import compress
from squeezer.integrations.lightning import SqueezerCallback
from squeezer.session import Compression

warnings.filterwarnings("ignore")


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 16, generator=g)
    y = (x[:, :4].argmax(1) + (x[:, 4] > 0).long()) % 4
    return TensorDataset(x, y)


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def digest(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    return {k: hashlib.sha256(v.detach().contiguous().cpu().numpy().tobytes()).hexdigest()
            for k, v in sorted(tensors.items())}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    module = Classifier()
    registry = squeezer.load_registry(autoload=False)
    comp = Compression(module.net, importance="l1", schedule=("geometric", {"target": 0.75, "rounds": 2}),
                       quantizer=("lsq", {"bits": 4}), prune_every=4, min_density=0.0, registry=registry)
    callback = SqueezerCallback(comp, export=out / "model.safetensors")
    # 128 samples, batch 16, 2 ranks: 4 optimizer steps per epoch; rounds after steps 4 and 8
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=3, callbacks=[callback],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, deterministic=True)
    trainer.fit(module, DataLoader(data(), batch_size=16, shuffle=False))
    rank = trainer.global_rank
    masks = compress.masks(module.net)
    report = {
        "world_size": trainer.world_size, "steps": comp.steps, "rounds": comp.rounds_done,
        "sparsity": comp.sparsity, "bits": sorted(set(comp.bits.values())),
        "masks": digest(masks), "weights": digest(dict(module.net.state_dict())),
        "optimizer_holds_all": {id(p) for p in module.parameters()}
        <= {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]},
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    if rank == 0:
        module.eval()
        with torch.no_grad():
            torch.save(module(data().tensors[0]), out / "predictions.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
