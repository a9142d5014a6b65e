"""Per-layer override patterns: globs and selectors match alike for weights and activations, a
glob that names no layer is refused, and '@depthwise' names exactly the depthwise convolutions."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import squeezer
from squeezer import compress
from squeezer.compress.overrides import SELECTORS, Layers, check_pattern, is_depthwise
from squeezer.compress.weight import compressed_weights
from squeezer.engine.activations import choose_activations
from squeezer.engine.quantizers import quantizer_chooser
from squeezer.errors import ConfigError
from squeezer.recipe.configs import ActivationOverride, Activations, QuantizerChoice, QuantizerOverride

REGISTRY = squeezer.load_registry()


def separable() -> nn.Sequential:
    """stem, depthwise, pointwise, a grouped (not depthwise) conv, head."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 8, 1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 3),
    )
    compress.attach(model)
    return model


def bits_by_path(model: nn.Module, choice: QuantizerChoice) -> dict[str, int | None]:
    choose = quantizer_chooser(model, REGISTRY, choice, "stages[1].quantizer")
    out: dict[str, int | None] = {}
    for path, _ in compressed_weights(model):
        chosen = choose(path)
        out[path] = None if chosen is None else chosen[1].bits
    return out


def test_depthwise_names_only_convolutions_with_a_group_per_input_channel() -> None:
    assert is_depthwise(nn.Conv2d(8, 8, 3, groups=8)) and is_depthwise(nn.Conv1d(4, 8, 3, groups=4))
    assert not is_depthwise(nn.Conv2d(8, 8, 3, groups=2))  # grouped, not depthwise
    assert not is_depthwise(nn.Conv2d(1, 8, 3))  # groups == in_channels == 1: an ordinary conv
    assert not is_depthwise(nn.Linear(8, 8))


def test_weight_selectors_and_globs_first_match_wins() -> None:
    model = separable()
    choice = QuantizerChoice(name="lsq", options={"bits": 4}, overrides=(
        QuantizerOverride(pattern="@depthwise", options={"bits": 8}),
        QuantizerOverride(pattern="@first", options={"bits": 6}),
        QuantizerOverride(pattern="@last", skip=True),
        QuantizerOverride(pattern="6.*", options={"bits": 3}),
    ))
    assert bits_by_path(model, choice) == {"0.weight": 6, "2.weight": 8, "4.weight": 4, "6.weight": 3,
                                           "9.weight": None}


def test_activation_selectors_match_module_names() -> None:
    model = separable()
    choice = Activations(bits=8, overrides=(
        ActivationOverride(pattern="@first", skip=True),
        ActivationOverride(pattern="@depthwise", bits=4),
        ActivationOverride(pattern="@last", bits=6, signed=True),
    ))
    assert choose_activations(model, choice, "a") == {"2": (4, None), "4": (8, None), "6": (8, None),
                                                       "9": (6, True)}


def test_wrapped_names_match_globs_without_the_prefix_and_selectors_as_they_are() -> None:
    class Wrapper(nn.Module):  # as DDP holds the model: parameter paths start with 'module.'
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    model = Wrapper(separable())
    choice = QuantizerChoice(name="lsq", options={"bits": 4}, overrides=(
        QuantizerOverride(pattern="4.weight", options={"bits": 2}),
        QuantizerOverride(pattern="@depthwise", options={"bits": 8}),
    ))
    bits = bits_by_path(model, choice)
    assert bits["module.4.weight"] == 2 and bits["module.2.weight"] == 8 and bits["module.6.weight"] == 4


@pytest.mark.parametrize("pattern", ["conv*", "0", "2.weight.x"])
def test_a_glob_that_names_no_layer_is_refused_with_its_field(pattern: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    compress.attach(model)
    choice = QuantizerChoice(name="lsq", options={"bits": 4}, overrides=(
        QuantizerOverride(pattern="@first", options={"bits": 8}), QuantizerOverride(pattern=pattern),
    ))
    field = re.escape("stages[1].quantizer.overrides[1]")
    with pytest.raises(ConfigError, match=rf"{field}: pattern '{re.escape(pattern)}' matches no compressed layer "
                                          r"\(they are 0\.weight, 2\.weight\)"):
        quantizer_chooser(model, REGISTRY, choice, "stages[1].quantizer")
    acts = Activations(overrides=(ActivationOverride(pattern=pattern.replace("0", "1"), skip=True),))
    with pytest.raises(ConfigError, match=r"^act\.overrides\[0\]: pattern .* matches no compressed layer"):
        choose_activations(model, acts, "act")


@given(st.text(min_size=1, max_size=12))
def test_only_known_selectors_pass_the_recipe_check(pattern: str) -> None:
    if pattern.startswith("@") and pattern not in SELECTORS:
        with pytest.raises(ValueError, match="unknown selector"):
            check_pattern(pattern)
    else:
        check_pattern(pattern)


@given(st.lists(st.sampled_from(["@first", "@last", "@depthwise", "*", "b*", "a.?", "zz"]), max_size=5),
       st.sampled_from(["a.1", "b.2", "c.3", "b.4"]))
def test_first_match_is_the_lowest_index_that_matches(patterns: list[str], name: str) -> None:
    layers = Layers(("a.1", "b.2", "c.3", "b.4"), depthwise=frozenset({"c.3"}))
    hits = [j for j, p in enumerate(patterns) if layers.matches(p, name)]
    assert layers.first_match(patterns, name) == (hits[0] if hits else None)
    assert layers.matches("@first", "a.1") and layers.matches("@last", "b.4") and not layers.matches("@last", "b.2")


def test_first_of_a_recurrent_net_is_the_weight_that_reads_the_input() -> None:
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 8, num_layers=2, bidirectional=True)
            self.head = nn.Linear(16, 2)

    model = Tagger()
    compress.attach(model)
    paths = [path for path, _ in compressed_weights(model)]
    assert paths == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_ih_l0_reverse", "rnn.weight_hh_l0_reverse",
                     "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.weight_ih_l1_reverse", "rnn.weight_hh_l1_reverse",
                     "head.weight"]
    choice = QuantizerChoice(name="lsq", options={"bits": 4},
                             overrides=(QuantizerOverride(pattern="@first", options={"bits": 8}),))
    bits = bits_by_path(model, choice)
    assert bits["rnn.weight_ih_l0"] == 8 and sum(b == 8 for b in bits.values()) == 1


def test_a_selector_may_name_no_layer_so_one_recipe_serves_every_model() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    compress.attach(model)
    choice = QuantizerChoice(name="lsq", options={"bits": 4}, overrides=(
        QuantizerOverride(pattern="@depthwise", options={"bits": 8}),))
    assert bits_by_path(model, choice) == {"0.weight": 4, "2.weight": 4}
    acts = Activations(overrides=(ActivationOverride(pattern="@depthwise", skip=True),))
    assert choose_activations(model, acts, "act") == {"0": (8, None), "2": (8, None)}
