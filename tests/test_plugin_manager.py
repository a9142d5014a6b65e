"""Plugin loading: entry points, blocking, direct plugin objects, and errors naming the plugin."""

from __future__ import annotations

import types
from collections.abc import Generator
from importlib import metadata

import attrs
import pytest

import squeezer
from squeezer import PluginError, hookimpl, plugin_manager
from squeezer.registry import KIND_HOOKS, Registry

BUILTINS = {"magnitude": "squeezer_magnitude", "schedules": "squeezer_schedules", "distillation": "squeezer_distill"}


@attrs.frozen
class NegMagnitude:
    """Negative magnitude: prunes the largest weights first."""

    needs_gradients = False

    def __call__(self, weight, grad=None):  # type: ignore[no-untyped-def]
        return -weight.detach().abs().float()


class ExtraPlugin:
    @staticmethod
    @hookimpl
    def squeezer_register_importances(registry: Registry) -> None:
        registry.add_importance("negmag", NegMagnitude)


def test_builtins_load_through_entry_points() -> None:
    pm = squeezer.make_plugin_manager(autoload=False)
    for name, module in BUILTINS.items():
        plugin = pm.get_plugin(name)
        assert plugin is not None and plugin.__name__ == module
        assert plugin_manager.plugin_version(name) == f"squeezer {squeezer.__version__}"
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="squeezer")}
    assert {name: eps[name] for name in BUILTINS} == BUILTINS
    registry = squeezer.build_registry(pm)
    l1 = registry.get("importance", "l1")
    assert l1.plugin == "magnitude" and l1.version == f"squeezer {squeezer.__version__}"
    assert registry.get("scheduler", "cubic").plugin == "schedules"
    assert registry.get("distillation_loss", "hinton").plugin == "distillation"


def test_block_argument() -> None:
    pm = squeezer.make_plugin_manager(autoload=False, block=["magnitude"])
    assert pm.get_plugin("magnitude") is None and pm.is_blocked("magnitude")
    registry = squeezer.build_registry(pm)
    assert registry.names("importance") == []
    assert registry.names("scheduler") == ["cubic", "geometric", "one_shot"]


def test_block_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUEEZER_BLOCK_PLUGINS", " magnitude , distillation,")
    registry = squeezer.load_registry(autoload=False)
    assert registry.names("importance") == [] and registry.names("distillation_loss") == []
    assert registry.names("scheduler")
    # blocking adds to the environment's list
    registry = squeezer.load_registry(autoload=False, block=["schedules"])
    assert registry.names("scheduler") == []


def test_blocking_lets_a_replacement_take_the_name() -> None:
    class Replacement:
        @staticmethod
        @hookimpl
        def squeezer_register_importances(registry: Registry) -> None:
            registry.add_importance("l1", NegMagnitude)

    registry = squeezer.load_registry(autoload=False, block=["magnitude"], plugins=[Replacement])
    assert registry.get("importance", "l1").cls is NegMagnitude
    assert registry.get("importance", "l1").plugin == "Replacement"


def test_plugin_object_adds_strategies() -> None:
    registry = squeezer.load_registry(autoload=False, plugins=[ExtraPlugin])
    info = registry.get("importance", "negmag")
    assert info.cls is NegMagnitude and info.plugin == "ExtraPlugin" and info.version is None
    assert registry.names("importance") == ["l1", "l2", "lamp", "negmag"]


def test_hookimpl_may_take_a_subset_of_arguments() -> None:
    calls: list[str] = []

    class NoArgs:
        @staticmethod
        @hookimpl
        def squeezer_register_schedulers() -> None:
            calls.append("called")

    squeezer.load_registry(autoload=False, plugins=[NoArgs])
    assert calls == ["called"]


class Misspelled:
    @staticmethod
    @hookimpl
    def squeezer_register_importance(registry: Registry) -> None:  # missing the final "s"
        registry.add_importance("never", NegMagnitude)


def test_misspelled_hookimpl_is_plugin_error() -> None:
    with pytest.raises(PluginError, match=r"'Misspelled'.*squeezer_register_importance"):
        squeezer.load_registry(autoload=False, plugins=[Misspelled])


def test_hookimpl_with_unknown_argument_is_plugin_error() -> None:
    class BadSignature:
        @staticmethod
        @hookimpl
        def squeezer_register_importances(registry: Registry, extra: int) -> None:
            pass

    with pytest.raises(PluginError, match="BadSignature"):
        squeezer.load_registry(autoload=False, plugins=[BadSignature])


def test_plugin_raising_in_hook_names_plugin_and_hook() -> None:
    class Exploding:
        @staticmethod
        @hookimpl
        def squeezer_register_schedulers(registry: Registry) -> None:
            raise RuntimeError("boom")

    with pytest.raises(PluginError) as info:
        squeezer.load_registry(autoload=False, plugins=[Exploding])
    message = str(info.value)
    assert "'Exploding'" in message and "squeezer_register_schedulers" in message and "boom" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_plugin_registering_badly_names_the_plugin() -> None:
    class BadName:
        @staticmethod
        @hookimpl
        def squeezer_register_importances(registry: Registry) -> None:
            registry.add_importance("NegMag", NegMagnitude)

    with pytest.raises(PluginError, match=r"plugin 'BadName'.*'NegMag'.*lowercase"):
        squeezer.load_registry(autoload=False, plugins=[BadName])


def _with_extra_entry_points(monkeypatch: pytest.MonkeyPatch, *extra: metadata.EntryPoint) -> None:
    own = [
        ep for ep in metadata.entry_points(group="squeezer")
        if ep.dist is not None and ep.dist.metadata["Name"].lower() == "squeezer"
    ]

    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        assert group == "squeezer"
        return [*own, *extra]

    monkeypatch.setattr(plugin_manager, "metadata", types.SimpleNamespace(entry_points=entry_points))


def test_plugin_failing_to_import_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = metadata.EntryPoint(name="brokenplug", value="squeezer_no_such_module_xyz", group="squeezer")
    _with_extra_entry_points(monkeypatch, broken)
    with pytest.raises(PluginError) as info:
        squeezer.load_registry(autoload=True)
    message = str(info.value)
    assert "'brokenplug'" in message and "failed to import" in message and "squeezer_no_such_module_xyz" in message
    # blocked or autoload off: the broken plugin is never imported
    assert squeezer.load_registry(autoload=True, block=["brokenplug"]).names("importance") == ["l1", "l2", "lamp"]
    assert squeezer.load_registry(autoload=False).names("importance") == ["l1", "l2", "lamp"]


def test_third_party_autoload_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("squeezer_fake_thirdparty")
    module.squeezer_register_importances = ExtraPlugin.squeezer_register_importances  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "squeezer_fake_thirdparty", module)
    ep = metadata.EntryPoint(name="fakeplug", value="squeezer_fake_thirdparty", group="squeezer")
    _with_extra_entry_points(monkeypatch, ep)
    assert "negmag" in squeezer.load_registry(autoload=True).names("importance")
    assert "negmag" not in squeezer.load_registry(autoload=False).names("importance")
    monkeypatch.setenv("SQUEEZER_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "negmag" not in squeezer.load_registry().names("importance")
    monkeypatch.setenv("SQUEEZER_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert squeezer.load_registry().get("importance", "negmag").plugin == "fakeplug"


def test_trace_hooks_writes_to_stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SQUEEZER_TRACE_HOOKS", "1")
    pm = squeezer.make_plugin_manager(autoload=False)
    pm.hook.squeezer_register_schedulers(registry=Registry())
    assert "squeezer_register_schedulers" in capsys.readouterr().err


def test_trace_hooks_traces_the_real_loading_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``squeezer.load_registry()`` calls the register hooks through pluggy, so tracing sees each call."""
    monkeypatch.setenv("SQUEEZER_TRACE_HOOKS", "1")
    registry = squeezer.load_registry(autoload=False, plugins=[ExtraPlugin])
    assert "negmag" in registry.names("importance")
    err = capsys.readouterr().err
    for hook_name in KIND_HOOKS.values():
        assert f"{hook_name} [hook]" in err and f"finish {hook_name} --> [] [hook]" in err
    for plugin in (*BUILTINS, "lsq", "ExtraPlugin"):
        assert f"of plugin {plugin!r} [registry]" in err
    monkeypatch.delenv("SQUEEZER_TRACE_HOOKS")
    squeezer.load_registry(autoload=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kind", ["wrapper", "hookwrapper"])
def test_a_wrapper_hook_is_a_plugin_error_naming_the_plugin(kind: str) -> None:
    registered: list[str] = []

    class Wrapping:
        @staticmethod
        @hookimpl(**{kind: True})
        def squeezer_register_importances(registry: Registry) -> Generator[None, object, object]:
            registry.add_importance("negmag", NegMagnitude)
            registered.append("negmag")
            result = yield
            return result

    message = rf"plugin 'Wrapping': its squeezer_register_importances is a hook wrapper \({kind}=True\)"
    with pytest.raises(PluginError, match=message):
        squeezer.load_registry(autoload=False, plugins=[Wrapping])
    assert registered == []
