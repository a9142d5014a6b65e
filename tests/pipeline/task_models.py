"""Factories for the task tests: a tiny next-token language model on generated sequences (Hugging
Face-style dict batches, ``input_ids`` and ``labels``) and a tiny regression model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

VOCAB, LENGTH = 12, 10


class TinyLM(nn.Module):
    """Embedding -> GRU -> vocabulary logits ``[batch, length, vocab]``; returns a dict with
    ``logits``, like a Hugging Face causal LM."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.rnn = nn.GRU(16, 32, batch_first=True)
        self.head = nn.Linear(32, VOCAB)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, Any]:
        hidden, _ = self.rnn(self.embed(input_ids))
        return {"logits": self.head(hidden)}


class Sequences(Dataset):
    """Counting sequences modulo the vocabulary from a random start (the next token is predictable),
    the last two positions of every fourth sequence padding (label -100)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB, (n, 1), generator=g)
        step = torch.randint(1, 3, (n, 1), generator=g)
        self.ids = (start + step * torch.arange(LENGTH)) % VOCAB
        self.labels = self.ids.clone()
        self.labels[::4, -2:] = -100

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "labels": self.labels[i]}


def make_lm() -> nn.Module:
    return TinyLM()


def make_lm_loaders(batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    # shuffled from torch's global RNG, which the pipeline seeds and checkpoints: a loader with its
    # own generator would restart its order on resume
    return (DataLoader(Sequences(512, 1), batch_size=batch_size, shuffle=True),
            DataLoader(Sequences(128, 2), batch_size=batch_size))


def make_regressor() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))


def make_regression_loaders(batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, generator=g)

    def split(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x = torch.randn(n, 8, generator=g)
        y = torch.tanh(x @ w / 2)[:, None] + 0.05 * torch.randn(n, 1, generator=g)
        return list(zip(x, y, strict=True))

    return (DataLoader(split(512), batch_size=batch_size, shuffle=True, generator=g),
            DataLoader(split(128), batch_size=batch_size))


def make_gpt2() -> nn.Module:
    """A Hugging Face GPT-2 language model from a tiny config (random weights; its ``lm_head`` is
    tied to the token embedding)."""
    import transformers

    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=32, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)
