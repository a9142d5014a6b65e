"""The typed registry: names, clashes, lookups with suggestions, building strategies from options."""

from __future__ import annotations

import attrs
import pytest

import squeezer
from squeezer import ConfigError, PluginError, UnknownStrategyError, hookimpl
from squeezer.registry import KINDS, Registry


@attrs.frozen
class Dummy:
    """A dummy strategy.

    More text.
    """

    level: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    needs_gradients = False


class NotAttrs:
    pass


@pytest.fixture
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


@pytest.mark.parametrize("name", ["Neg", "NEG", "1neg", "neg-mag", "neg mag", "", "_neg", "négmag"])
def test_names_must_be_lowercase_identifiers(name: str) -> None:
    reg = Registry()
    with pytest.raises(PluginError, match="lowercase identifier"):
        reg.add_importance(name, Dummy)


@pytest.mark.parametrize("name", ["neg", "neg_mag", "l1x", "a2b_3"])
def test_valid_names_accepted(name: str) -> None:
    reg = Registry()
    reg.add_importance(name, Dummy)
    info = reg.get("importance", name)
    assert info.cls is Dummy and info.plugin == "<direct>" and info.version is None


def test_non_string_name_and_non_attrs_class_and_unknown_kind_rejected() -> None:
    reg = Registry()
    with pytest.raises(PluginError, match="lowercase identifier"):
        reg.add_importance(3, Dummy)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="attrs class"):
        reg.add_importance("plain", NotAttrs)
    with pytest.raises(PluginError, match="unknown extension point 'pruner'"):
        reg.add("pruner", "x", Dummy)


def test_clash_names_both_plugins() -> None:
    class Shadow:
        @staticmethod
        @hookimpl
        def squeezer_register_importances(registry: Registry) -> None:
            registry.add_importance("l1", Dummy)

    with pytest.raises(PluginError) as info:
        squeezer.load_registry(autoload=False, plugins=[Shadow])
    message = str(info.value)
    assert "'magnitude'" in message and "'Shadow'" in message and "'l1'" in message


def test_clash_between_two_direct_plugins() -> None:
    reg = Registry()
    reg._bind("first", "first-dist 1.0")
    reg.add_scheduler("same", Dummy)
    reg._bind("second", None)
    with pytest.raises(PluginError, match=r"both plugin 'first' and plugin 'second'"):
        reg.add_scheduler("same", Dummy)
    # the same name under another kind is no clash
    reg.add_importance("same", Dummy)
    assert reg.get("scheduler", "same").version == "first-dist 1.0"


def test_unknown_name_lists_valid_and_suggests_closest(registry: Registry) -> None:
    with pytest.raises(UnknownStrategyError) as info:
        registry.get("scheduler", "geometrc")
    message = str(info.value)
    assert "did you mean 'geometric'?" in message
    assert "valid: cubic, geometric, one_shot" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, PluginError)
    assert not message.startswith('"')  # not quoted like a plain KeyError


def test_unknown_name_without_close_match_still_lists_valid(registry: Registry) -> None:
    with pytest.raises(UnknownStrategyError) as info:
        registry.get("distillation_loss", "zzzzzz")
    assert "did you mean" not in str(info.value)
    assert "hinton" in str(info.value) and "mse" in str(info.value)
    with pytest.raises(UnknownStrategyError, match="none registered"):
        Registry().get("quantizer", "lsq")


def test_create_builds_with_options(registry: Registry) -> None:
    sched = registry.create("scheduler", "geometric", {"target": 0.5, "rounds": 3})
    assert sched.target == 0.5 and sched.rounds == 3
    assert registry.create("importance", "l1").needs_gradients is False
    assert registry.create("distillation_loss", "hinton", None).temperature == 4.0


def test_create_unknown_option_names_it(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        registry.create("scheduler", "cubic", {"target": 0.5, "rouds": 3}, where="recipe.toml: stages[0]")
    message = str(info.value)
    assert message.startswith("recipe.toml: stages[0]: ")
    assert "'rouds'" in message and "valid: initial, rounds, target" in message


@pytest.mark.parametrize(
    ("kind", "name", "options", "field"),
    [
        ("scheduler", "geometric", {"target": 2.0}, "target"),
        ("scheduler", "geometric", {"target": 0.5, "rounds": 0}, "rounds"),
        ("scheduler", "cubic", {"target": -0.1}, "target"),
        ("distillation_loss", "hinton", {"temperature": 0.0}, "temperature"),
        ("distillation_loss", "hinton", {"temperature": 1000.0}, "temperature"),
        ("scheduler", "one_shot", {}, "target"),  # a required option missing
    ],
)
def test_create_bad_value_is_config_error_naming_the_option(
    registry: Registry, kind: str, name: str, options: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError, match=f"'{field}'") as info:
        registry.create(kind, name, options, where="r.toml")
    assert str(info.value).startswith("r.toml: ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kind", "name", "options", "field"),
    [
        ("scheduler", "geometric", {"target": 0.5, "rounds": "four"}, "rounds"),
        ("distillation_loss", "hinton", {"temperature": "hot"}, "temperature"),
    ],
)
def test_create_wrong_type_is_config_error_naming_the_option(
    registry: Registry, kind: str, name: str, options: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError, match=f"'{field}'"):
        registry.create(kind, name, options)


def test_strategy_info_help_options_and_iteration(registry: Registry) -> None:
    reg = Registry()
    reg.add_importance("dummy", Dummy)
    info = reg.get("importance", "dummy")
    assert info.help == "A dummy strategy."
    assert [a.name for a in info.options()] == ["level"]
    kinds = [i.kind for i in registry]
    assert kinds == sorted(kinds, key=KINDS.index)  # grouped by kind, in KINDS order
    assert registry.names("importance") == ["l1", "l2", "lamp"]
    assert registry.names("scheduler") == ["cubic", "geometric", "one_shot"]
    assert registry.names("distillation_loss") == ["hinton", "mse"]
