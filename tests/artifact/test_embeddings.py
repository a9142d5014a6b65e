"""Embedding tables as targets (``types`` with ``"Embedding"``): per-row (per-token) LSQ steps,
and the artifact of a BERT, whose embeddings are a large share of its weights, shrinks with them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import squeezer
import squeezer.compress as sc
from squeezer.compress.targets import DEFAULT_TYPES, Targets

transformers = pytest.importorskip("transformers")
REGISTRY = squeezer.load_registry(autoload=False)


def bert() -> nn.Module:
    config = transformers.BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=3)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.BertForSequenceClassification(config).eval()


def compressed(types: tuple[str, ...]) -> nn.Module:
    model = bert()
    sc.attach(model, Targets(types=types))
    sc.prune(model, lambda _p, w: w.abs(), 0.8, scope="layer")
    lsq = REGISTRY.create("quantizer", "lsq", {"bits": 4, "per_channel": True}, where="test")
    sc.attach_quantizers(model, lambda _p: ("lsq", lsq))
    return model


def test_embeddings_get_one_step_per_row_and_shrink_the_bert_artifact(tmp_path: Path) -> None:
    default = squeezer.export(compressed(DEFAULT_TYPES), tmp_path / "default.sqz")
    model = compressed((*DEFAULT_TYPES, "Embedding"))
    with_embeddings = squeezer.export(model, tmp_path / "embeddings.sqz")

    table = dict(sc.compressed_weights(model))["bert.embeddings.word_embeddings.weight"]
    assert table.quantizer is not None
    steps = list(table.quantizer.parameters())
    assert [tuple(p.shape) for p in steps] == [(400, 1)]  # one step per token's row
    names = {layer.name for layer in with_embeddings.layers} - {layer.name for layer in default.layers}
    assert names == {f"bert.embeddings.{n}_embeddings.weight" for n in ("word", "position", "token_type")}
    # the embeddings are about 40 % of this BERT's weights: left dense, they dominate the file
    assert with_embeddings.compression > 2 * default.compression
    ids = torch.randint(0, 400, (2, 12), generator=torch.Generator().manual_seed(1))
    loaded = squeezer.load(tmp_path / "embeddings.sqz", bert())
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=1e-6)
