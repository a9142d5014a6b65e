"""Which weights get compressed: by type, by name patterns, through wrappers; what is skipped and why."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from squeezer import TargetError, compress
from squeezer.compress import Targets, resolve
from squeezer.testing.models import make


def named_net() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1)),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            classifier=nn.Linear(4, 2),
        )
    )


class Wrapper(nn.Module):
    """What DDP looks like to targeting: the real model under ``module``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.module = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.module(x)
        return out


class MyLinear(nn.Linear):
    pass


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.attn(x, x, x, need_weights=False)[0]
        return out


def test_default_types_and_skipped_reasons() -> None:
    res = resolve(named_net(), Targets())
    assert res.targets == ("features.0.weight", "features.3.weight", "classifier.weight")
    skipped = {s.name: s.reason for s in res.skipped}
    assert skipped == {"features.1": "type BatchNorm2d not targeted"}


def test_targeting_by_type() -> None:
    assert resolve(named_net(), Targets(types="Linear")).targets == ("classifier.weight",)
    res = resolve(named_net(), Targets(types=["Conv2d", "BatchNorm2d"]))
    assert res.targets == ("features.0.weight", "features.1.weight", "features.3.weight")
    assert {s.name for s in res.skipped} == {"classifier"}


def test_include_and_exclude_patterns() -> None:
    res = resolve(named_net(), Targets(include="features.*"))
    assert res.targets == ("features.0.weight", "features.3.weight")
    assert any(s.name == "classifier" and "not matched by include" in s.reason for s in res.skipped)
    res = resolve(named_net(), Targets(exclude=["classifier", "features.3"]))
    assert res.targets == ("features.0.weight",)
    reasons = {s.name: s.reason for s in res.skipped}
    assert reasons["classifier"] == "excluded by pattern 'classifier'"
    assert reasons["features.3"] == "excluded by pattern 'features.3'"
    # exclude also matches full parameter paths
    assert resolve(named_net(), Targets(exclude="*.0.weight")).targets == ("features.3.weight", "classifier.weight")


def test_parameter_glob_on_multihead_attention() -> None:
    model = Attention()
    res = resolve(model, Targets(types=(), parameters="*.in_proj_weight"))
    assert res.targets == ("attn.in_proj_weight",)
    # the out projection is a Linear subclass and is matched by type
    both = resolve(model, Targets(parameters="*.in_proj_weight"))
    assert set(both.targets) == {"attn.in_proj_weight", "attn.out_proj.weight"}
    compress.attach(model, Targets(parameters="*.in_proj_weight"))
    compress.prune(model, lambda _p, w: w.abs().float(), 0.5, scope="layer")
    x = torch.randn(2, 3, 8)
    out = model(x)
    assert out.shape == (2, 3, 8) and bool(torch.isfinite(out).all())
    assert (model.attn.in_proj_weight == 0).float().mean().item() == pytest.approx(0.5)


def test_default_targets_cover_attention_and_hf_conv1d() -> None:
    """The matrix weights of common architectures are compressed without naming them."""
    assert set(resolve(Attention(), Targets()).targets) == {"attn.in_proj_weight", "attn.out_proj.weight"}
    separate = nn.MultiheadAttention(8, 2, kdim=4, vdim=6)  # kdim/vdim differ: three projection matrices
    assert set(resolve(nn.Sequential(separate), Targets()).targets) == {
        "0.q_proj_weight", "0.k_proj_weight", "0.v_proj_weight", "0.out_proj.weight"}
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    gpt2_block = nn.Sequential(pytorch_utils.Conv1D(24, 8), nn.GELU(), pytorch_utils.Conv1D(8, 24))
    assert resolve(gpt2_block, Targets()).targets == ("0.weight", "2.weight")
    compress.attach(gpt2_block)
    compress.prune(gpt2_block, lambda _p, w: w.abs().float(), 0.5)
    assert compress.sparsity(gpt2_block) == pytest.approx(0.5, abs=0.01)
    assert gpt2_block(torch.randn(3, 8)).shape == (3, 8)


def test_parameter_glob_on_transformer_encoder() -> None:
    model, x = make("transformer_net")
    res = resolve(model, Targets(types=(), parameters="*.in_proj_weight"))
    assert res.targets == ("encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.1.self_attn.in_proj_weight")
    compress.attach(model, Targets(parameters="*.in_proj_weight"))
    compress.prune(model, lambda _p, w: w.abs().float(), 0.7)
    assert compress.sparsity(model) == pytest.approx(0.7, abs=1e-3)
    model.eval()
    with torch.no_grad():
        assert bool(torch.isfinite(model(x)).all())


@pytest.mark.parametrize(
    "targets",
    [
        Targets(),
        Targets(include="features.*"),
        Targets(exclude="classifier"),
        Targets(types=(), parameters="features.*.weight"),
        Targets(types="BatchNorm2d", parameters="classifier.bias"),
    ],
)
def test_ddp_style_module_prefix_changes_nothing(targets: Targets) -> None:
    plain = resolve(named_net(), targets)
    wrapped = resolve(Wrapper(named_net()), targets)
    assert wrapped.targets == tuple(f"module.{t}" for t in plain.targets)
    assert {(s.name, s.reason) for s in wrapped.skipped} == {(s.name, s.reason) for s in plain.skipped}


def test_wrapped_model_can_be_attached_and_pruned() -> None:
    model = Wrapper(named_net())
    compress.attach(model)
    assert compress.spec(model)["weights"] == [
        "module.features.0.weight", "module.features.3.weight", "module.classifier.weight"
    ]
    compress.prune(model, lambda _p, w: w.abs().float(), 0.5)
    assert model(torch.randn(1, 3, 5, 5)).shape == (1, 2)


@pytest.mark.parametrize(
    "targets",
    [
        Targets(types="LSTM"),
        Targets(include="nothing.*"),
        Targets(exclude="*"),
        Targets(types=(), parameters="*.no_such_param"),
    ],
)
def test_target_list_matching_nothing_raises(targets: Targets) -> None:
    with pytest.raises(TargetError, match="matched no parameter"):
        resolve(named_net(), targets)
    with pytest.raises(TargetError):
        compress.attach(named_net(), targets)


@pytest.mark.parametrize("wrap", ["weight_norm", "spectral_norm", "orthogonal", "legacy_weight_norm"])
def test_weights_under_another_parametrization_are_left_uncompressed(wrap: str) -> None:
    """wav2vec2's positional convolution carries torch's weight_norm; composing with another
    parametrization would need squeezer to own its originals, so such weights are skipped, named."""
    import warnings

    from torch.nn.utils import parametrizations

    layer = nn.Linear(4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the legacy hook is deprecated, and still used
        wrapped = (nn.utils.weight_norm(layer) if wrap == "legacy_weight_norm"
                   else getattr(parametrizations, wrap)(layer))
    model = nn.Sequential(wrapped, nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    before = wrapped(x).detach()
    resolution = compress.attach(model)
    assert resolution.targets == ("2.weight",)
    assert any(s.name == "0" and "left uncompressed" in s.reason for s in resolution.skipped)
    compress.prune(model, lambda path, w: w.abs(), 0.5)
    torch.testing.assert_close(model[0](x), before)  # the weight-normed layer is as it was
    assert bool(torch.isfinite(model(x)).all())


def test_a_tiny_wav2vec2_compresses_around_its_weight_normed_convolution() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.Wav2Vec2Config(
        vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2)
    model = transformers.Wav2Vec2ForCTC(config).eval()
    resolution = compress.attach(model)
    assert any("pos_conv_embed" in s.name and "parametrization" in s.reason for s in resolution.skipped)
    assert len(resolution.targets) > 5
    compress.prune(model, lambda path, w: w.abs(), 0.5)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 1600)).logits).all()


def test_custom_subclass_matched_by_base_type_name() -> None:
    model = nn.Sequential(MyLinear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert resolve(model, Targets(types="Linear")).targets == ("0.weight", "2.weight")
    assert resolve(model, Targets(types="MyLinear")).targets == ("0.weight",)


def test_attach_is_idempotent_and_resolves_parametrized_modules() -> None:
    model = named_net()
    first = compress.attach(model)
    second = compress.attach(model)
    assert first.targets == second.targets
    assert compress.spec(model)["weights"] == list(first.targets)
    assert sum(1 for _ in compress.compressed_weights(model)) == 3


def test_integer_parameters_rejected() -> None:
    class IntWeight(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3, dtype=torch.int64), requires_grad=False)

    with pytest.raises(TargetError, match="floating-point"):
        compress.attach_paths(IntWeight(), ["weight"])
