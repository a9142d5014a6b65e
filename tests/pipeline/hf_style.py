"""Models and data shaped like Hugging Face's, for tests/pipeline/test_batches.py: dict batches
(``input_ids``, ``attention_mask``, ``labels``) passed to the model as keyword arguments, and
outputs that carry the logits in a dict or an attribute. The recipe's factories name this
module (``hf_style:<name>``) once the test has put this folder on ``sys.path``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

VOCAB, LENGTH, CLASSES = 20, 8, 3


class Output:
    """Like ``transformers.modeling_outputs.SequenceClassifierOutput``: logits as an attribute."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class TokenClassifier(nn.Module):
    """Embedding, masked mean over tokens, two Linear layers; ``output`` picks the return type."""

    def __init__(self, output: str = "dict") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, 16)
        self.hidden = nn.Linear(16, 32)
        self.head = nn.Linear(32, CLASSES)
        self.output = output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        m = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * m).sum(1) / m.sum(1).clamp_min(1)
        logits = self.head(torch.relu(self.hidden(pooled)))
        if self.output == "dict":
            return {"logits": logits}
        if self.output == "object":
            return Output(logits)
        if self.output == "tuple":
            return (logits, pooled)
        return "not logits"


class Tokens(Dataset):
    """Label: which of three marker tokens appears first; padded to LENGTH with a mask."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, VOCAB, (n, LENGTH), generator=g)
        self.lengths = torch.randint(3, LENGTH + 1, (n,), generator=g)
        self.labels = torch.randint(0, CLASSES, (n,), generator=g)
        self.ids[torch.arange(n), torch.randint(0, 3, (n,), generator=g)] = self.labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mask = (torch.arange(LENGTH) < self.lengths[i]).long()
        return {"input_ids": self.ids[i], "attention_mask": mask, "labels": self.labels[i]}


def make_model(output: str = "dict") -> TokenClassifier:
    return TokenClassifier(output)


def make_loaders(batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    return (DataLoader(Tokens(256, 0), batch_size=batch_size, shuffle=True),
            DataLoader(Tokens(128, 1), batch_size=batch_size))
