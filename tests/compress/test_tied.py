"""Tied weights (one parameter at several paths, as a language model's token embedding and output
head): compressed once, with one mask and one quantizer shared by every module that uses it,
stored once in the artifact, and tied again wherever the model is rebuilt."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import squeezer
from squeezer import compress
from squeezer.artifact.reader import load_state_dict, read
from squeezer.compress import Targets
from squeezer.errors import ArtifactError, TargetError

REGISTRY = squeezer.load_registry()


class TiedLM(nn.Module):
    """Token embedding, a hidden layer and an output head that reuses the embedding table."""

    def __init__(self, tie: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 6)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, 12, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.mid(self.embed(tokens))))
        return out


TOKENS = torch.randint(0, 12, (4, 5), generator=torch.Generator().manual_seed(0))


def compressed(sparsity: float = 0.5, bits: int | None = 4, seed: int = 0) -> TiedLM:
    torch.manual_seed(seed)
    model = TiedLM()
    compress.attach(model, Targets(types=("Linear",)))
    compress.prune(model, lambda _p, w: w.abs(), sparsity)
    if bits is not None:
        lsq = REGISTRY.create("quantizer", "lsq", {"bits": bits, "per_channel": True}, where="test")
        compress.attach_quantizers(model, lambda _path: ("lsq", lsq))
    return model.eval()


def test_a_tied_weight_is_compressed_once_and_seen_the_same_by_every_user() -> None:
    model = compressed()
    assert [path for path, _ in compress.compressed_weights(model)] == ["embed.weight", "mid.weight"]
    assert compress.weight_aliases(model) == {"embed.weight": ("head.weight",)}
    embed, head = model.embed.parametrizations.weight, model.head.parametrizations.weight
    assert embed[0] is head[0]  # one CompressedWeight: one mask, one quantizer
    assert embed.original is head.original  # one stored tensor
    assert torch.equal(model.embed.weight, model.head.weight)
    # counted once: the tied table (72 weights) and mid (36)
    assert compress.sparsity(model) == pytest.approx(0.5, abs=1 / 108)
    names = [n for n, _ in model.named_parameters()]
    assert sum(n.endswith("original") for n in names) == 2  # the optimizer sees the tied weight once


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 0.95), st.sampled_from([None, 2, 4, 8]))
def test_pruned_entries_of_a_tied_weight_are_zero_in_both_forwards_and_in_the_gradient(
        sparsity: float, bits: int | None) -> None:
    model = compressed(sparsity, bits).train()
    mask = dict(compress.compressed_weights(model))["embed.weight"].mask
    assert not bool(model.embed.weight[~mask].any()) and not bool(model.head.weight[~mask].any())
    model(TOKENS).square().mean().backward()
    grad = compress.original(model, "embed.weight").grad
    assert grad is not None and not bool(grad[~mask].any())  # from both uses


def test_the_head_alone_targets_the_tie_and_excluding_either_path_leaves_it() -> None:
    model = TiedLM()
    resolution = compress.attach(model, Targets(types=("Linear",), include=("head",)))
    assert resolution.targets == ("head.weight",)
    assert compress.weight_aliases(model) == {"embed.weight": ("head.weight",)}

    model = TiedLM()
    resolution = compress.attach(model, Targets(types=("Linear", "Embedding"), exclude=("embed",)))
    assert resolution.targets == ("mid.weight",)
    assert any(s.name == "head" and "tied to embed.weight, which is excluded" in s.reason
               for s in resolution.skipped)
    assert model.head.weight is model.embed.weight  # the tie is untouched
    with pytest.raises(TargetError, match=r"matched no parameter.*head: weight is tied to embed\.weight"):
        compress.attach(TiedLM(), Targets(include=("head",), exclude=("embed",)))


def test_a_layer_used_twice_is_compressed_once() -> None:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(3, 2))
    compress.attach(model)
    assert [p for p, _ in compress.compressed_weights(model)] == ["0.weight", "3.weight"]
    assert compress.weight_aliases(model) == {"0.weight": ("2.weight",)}
    compress.prune(model, lambda _p, w: w.abs(), 0.5)
    baked = compress.bake(copy.deepcopy(model))
    assert baked[0] is baked[2] and not isinstance(baked[0].weight, type(None))
    x = torch.randn(2, 3)
    torch.testing.assert_close(baked(x), model(x), rtol=0, atol=0)


def test_bake_keeps_the_tie_and_the_student() -> None:
    model = compressed()
    baked = compress.bake(copy.deepcopy(model))
    assert baked.head.weight is baked.embed.weight
    assert isinstance(baked.embed.weight, nn.Parameter)
    assert torch.equal(baked(TOKENS), model(TOKENS))


def test_spec_and_restore_rebuild_the_tie_on_a_fresh_model() -> None:
    model = compressed()
    structure = compress.spec(model)
    assert structure["aliases"] == {"embed.weight": ["head.weight"]}
    for fresh in (TiedLM(), TiedLM(tie=False)):  # a model that lost the tie gets it back
        compress.restore(fresh, structure, REGISTRY)
        fresh.load_state_dict(model.state_dict())
        assert compress.original(fresh, "head.weight") is compress.original(fresh, "embed.weight")
        assert compress.weight_aliases(fresh) == {"embed.weight": ("head.weight",)}
        assert torch.equal(fresh.eval()(TOKENS), model(TOKENS))


def test_the_artifact_stores_a_tied_weight_once_and_load_ties_it(tmp_path: Path) -> None:
    model = compressed()
    path = tmp_path / "tied.sqz"
    report = squeezer.export(model, path)
    assert [layer.name for layer in report.layers] == ["embed.weight", "mid.weight"]
    assert read(path).meta["layers"][0]["aliases"] == ["head.weight"]
    assert not any(e["name"].startswith("head.") for e in read(path).meta["state"])
    for fresh in (TiedLM(), TiedLM(tie=False)):
        loaded = squeezer.load(path, fresh)
        assert loaded.head.weight is loaded.embed.weight
        assert torch.equal(loaded(TOKENS), model(TOKENS))
    assert load_state_dict(path)["head.weight"].equal(model.head.weight)


def test_a_model_that_ties_what_the_artifact_keeps_apart_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    apart = TiedLM(tie=False)
    compress.attach(apart, Targets(types=("Linear", "Embedding")))
    compress.prune(apart, lambda _p, w: w.abs(), 0.5)
    squeezer.export(apart, tmp_path / "apart.sqz")
    with pytest.raises(ArtifactError, match=r"ties embed\.weight to head\.weight, which the artifact stores apart"):
        squeezer.load(tmp_path / "apart.sqz", TiedLM())
