"""The model and data of tests/integrations/test_same_recipe.py, importable by the recipe's
factories (``same_recipe_task:make_model``) once this folder is on ``sys.path``.

One network and one fixed data order serve every trainer: the pipeline reads ``(x, y)`` tuples,
Lightning and Hugging Face read ``{"x", "labels"}`` dicts of the same samples.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

BATCH = 16  # 64 samples: 4 optimizer steps per epoch


class Net(nn.Module):
    """Returns logits; with ``labels`` (what HF's Trainer passes), a dict that also holds the loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        logits = self.body(x)
        if labels is None:
            return logits
        return {"logits": logits, "loss": nn.functional.cross_entropy(logits, labels)}


def samples(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 16, generator=g)
    return x, (x[:, :4].argmax(1) + (x[:, 4] > 0).long()) % 4


class Samples(Dataset):
    def __init__(self) -> None:
        self.x, self.y = samples()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def dict_loader() -> DataLoader:
    return DataLoader(Samples(), batch_size=BATCH, shuffle=False)


def make_model() -> Net:
    return Net()


def make_loaders() -> tuple[DataLoader, DataLoader]:
    data = TensorDataset(*samples())
    return DataLoader(data, batch_size=BATCH, shuffle=False), DataLoader(data, batch_size=64)
