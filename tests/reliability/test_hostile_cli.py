"""Hostile input found by the independent harness (issue 14, items 7-9 and 12-16): special files as
recipes, plugins that exit or interrupt, rich markup in paths and names, stages that would be
ignored, stale temporary files, --overwrite and user files, huge values, empty data, concurrent
runs, and byte-reproducible artifacts. Each case failed before its fix."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from importlib import metadata
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import squeezer
from squeezer import ConfigError, PluginError
from squeezer.cli import app
from squeezer.pipeline import outdir
from squeezer.pipeline.events import RunStarted, StageStarted
from squeezer.recipe import load_recipe, parse_recipe

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hostile_support  # noqa: E402
from helpers import one_line_error  # noqa: E402

FACTORIES = '[model]\nfactory = "helpers:tiny"\n[data]\nfactory = "helpers:loaders"\n'
TRAIN = FACTORIES + '[[stages]]\ntype = "train"\nepochs = 1\n'
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
       "SQUEEZER_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- 7: special files and huge files as recipes -------------------------------------------------


def _squeezer(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "squeezer", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def test_a_fifo_or_a_device_as_recipe_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "recipe.toml"
    os.mkfifo(fifo)
    for path, kind, command in ((fifo, "FIFO", "recipe validate"), (fifo, "FIFO", "run"),
                                (Path("/dev/zero"), "character device", "recipe validate")):
        proc = _squeezer(*command.split(), str(path))  # before: blocked forever / grew memory until killed
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [f"error: {path}: cannot read recipe: not a regular file (a {kind})"]
    with pytest.raises(ConfigError, match="not a regular file"):
        load_recipe(Path("/dev/zero"))


def test_a_huge_recipe_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(TRAIN.encode() + b"#" * (1 << 20))
    with pytest.raises(ConfigError, match=r"big\.toml: recipe is larger than 1,048,576 bytes"):
        load_recipe(big)
    one_line_error(cli("recipe", "validate", big), 2, str(big), "larger than")


# --- 8: plugins that exit or interrupt --------------------------------------------------------------


def _entry_point_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    """Install module ``name`` (``source``) as the only third-party plugin entry point."""
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SQUEEZER_DISABLE_PLUGIN_AUTOLOAD", "0")
    ep = metadata.EntryPoint(name=name, value=name, group="squeezer")
    real = metadata.entry_points

    def entry_points(**kwargs: Any) -> Any:
        return [ep] if kwargs.get("group") == "squeezer" else real(**kwargs)

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize("code", ["0", "3", "None", "'bye'"])
def test_a_plugin_calling_sys_exit_at_import_is_a_plugin_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    _entry_point_plugin(tmp_path, monkeypatch, "quitter", f"import sys\nsys.exit({code})\n")
    with pytest.raises(PluginError, match=r"plugin 'quitter' .* failed to import: SystemExit: the plugin called "
                                          r"sys\.exit"):
        squeezer.load_registry()
    recipe = write(tmp_path / "r.toml", TRAIN)
    for args in (["plugins", "list"], ["recipe", "validate", recipe], ["run", recipe, "--out", tmp_path / "o"]):
        one_line_error(cli(*args), 2, "plugin 'quitter'", "sys.exit")  # before: exit 0 (or 3), nothing done
    assert not (tmp_path / "o").exists()


def test_a_hook_calling_sys_exit_or_raising_keyboard_interrupt_is_a_plugin_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for plugin, needle in ((hostile_support.ExitsInHook(3), "sys.exit(3)"),
                           (hostile_support.ExitsInHook(0), "sys.exit(0)"),
                           (hostile_support.InterruptsInHook(), "KeyboardInterrupt raised by the plugin itself")):
        with pytest.raises(PluginError) as info:
            squeezer.load_registry(autoload=False, plugins=[plugin])
        message = str(info.value)
        assert f"plugin {plugin.__name__!r} raised in squeezer_register_" in message and needle in message, message
    _entry_point_plugin(tmp_path, monkeypatch, "interrupter", (
        "from squeezer import hookimpl\n\n@hookimpl\ndef squeezer_register_importances(registry):\n"
        "    raise KeyboardInterrupt\n"))
    # before: exit 130 and no error line
    one_line_error(cli("run", write(tmp_path / "r.toml", TRAIN), "--out", tmp_path / "o"), 2,
                   "plugin 'interrupter' raised in squeezer_register_importances", "KeyboardInterrupt")


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_a_real_ctrl_c_while_plugins_load_is_still_an_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt) as info:
        squeezer.load_registry(autoload=False, plugins=[hostile_support.CtrlCInHook()])
    assert not isinstance(info.value, PluginError)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the boundary's handler is gone


def test_strategy_code_calling_sys_exit_is_a_plugin_error() -> None:
    registry = squeezer.load_registry(autoload=False, plugins=[hostile_support.Schedules()])
    for name, needle in (("exiting", "raised while being built: SystemExit"),
                         ("exiting_sparsities", "sparsities() failed: SystemExit: the plugin called sys.exit(4)")):
        text = FACTORIES + f'[[stages]]\ntype = "prune"\nscheduler = {{ name = "{name}" }}\n'
        with pytest.raises(PluginError) as info:
            parse_recipe(text, source="r.toml", registry=registry)
        assert "r.toml: stages[0].scheduler" in str(info.value) and needle in str(info.value), str(info.value)


def test_an_invalid_hook_is_named_on_one_line() -> None:
    import helpers

    with pytest.raises(PluginError) as info:
        squeezer.load_registry(autoload=False, plugins=[helpers.WrongHookSignature()])
    assert "\n" not in str(info.value) and "'wrong_signature'" in str(info.value)  # before: three lines


# --- 9: rich markup in user text ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x[/]y", "x[bold]y", "x[red]y[/red]:smile:"])
def test_markup_in_the_output_path_and_stage_names_is_printed_as_it_is(tmp_path: Path, name: str) -> None:
    stage = f'[[stages]]\ntype = "train"\nname = "{name}"\nepochs = 1\n'
    recipe = write(tmp_path / f"{name.replace('/', '_')}.toml", FACTORIES + stage)
    out = tmp_path / name
    result = cli("run", recipe, "--out", out)
    assert result.exit_code == 0, result.output  # before: MarkupError, exit 1 (x[/]y)
    assert f"artifact: {out / 'model.safetensors'}" in result.stdout  # before: 'xy' for x[bold]y
    assert f"recipe {recipe} -> {out}" in result.stdout
    assert f"stage 1/1 {name} (train)" in result.stdout and f"stages: {name}" in result.stdout
    assert (out / "model.safetensors").exists()


def test_the_live_display_prints_markup_in_names_as_it_is() -> None:
    from squeezer.cli.progress import ProgressRenderer

    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True, width=200, color_system=None)
    with ProgressRenderer(console, live=True) as renderer:
        renderer(RunStarted("r[bold].toml", ("[red]a[/]:smile:",), "out[/]", None))
        renderer(StageStarted(0, "[red]a[/]:smile:", "train", 1, 3))
    text = buffer.getvalue()
    assert "recipe r[bold].toml -> out[/]" in text and "[red]a[/]:smile:" in text, text


# --- 12: a second quantizer is refused ----------------------------------------------------------------

QUANTIZE = 'type = "quantize"\nquantizer = {{ name = "minmax", bits = {} }}\n'
PRUNE_Q = 'type = "prune"\nscheduler = { name = "one_shot", target = 0.5 }\nquantizer = { name = "minmax", bits = 4 }\n'


def _stages(*stages: str) -> str:
    return FACTORIES + "".join(f"[[stages]]\n{s}" for s in stages)


@pytest.mark.parametrize(("stages", "needle"), [
    ((QUANTIZE.format(4), QUANTIZE.format(2)), "stages[1].quantizer: the weights are already quantized by stages[0]"),
    ((PRUNE_Q, 'type = "train"\n', QUANTIZE.format(2)), "stages[2].quantizer: the weights are already quantized by "
                                                         "stages[0] ('prune', quantizer 'minmax')"),
    ((QUANTIZE.format(8), PRUNE_Q), "stages[1].quantizer: the weights are already quantized by stages[0]"),
])
def test_a_second_quantizer_is_refused(tmp_path: Path, stages: tuple[str, ...], needle: str) -> None:
    text = _stages(*stages)
    registry = squeezer.load_registry(autoload=False)
    with pytest.raises(ConfigError) as info:
        parse_recipe(text, source="r.toml", registry=registry)
    assert str(info.value).startswith(f"r.toml: {needle}"), str(info.value)
    recipe = write(tmp_path / "r.toml", text)
    one_line_error(cli("recipe", "validate", recipe), 2, needle)
    one_line_error(cli("run", recipe, "--out", tmp_path / "o"), 2, needle)  # before: a 4-bit artifact, exit 0
    assert not (tmp_path / "o").exists()


def test_quantizing_again_after_a_distill_stage_is_allowed() -> None:
    parse_recipe(_stages(QUANTIZE.format(4), 'type = "distill"\n', QUANTIZE.format(2)),
                 registry=squeezer.load_registry(autoload=False))


# --- 13: stale temporary files and Ctrl-C while importing ------------------------------------------------


def test_a_successful_write_removes_the_artifacts_stale_temp_files(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.toml", TRAIN)
    out = tmp_path / "out"
    assert cli("run", recipe, "--out", out, "--quiet").exit_code == 0
    stale = out / ".model.safetensors.k1ll3d_x.tmp"  # what a SIGKILL during the artifact write leaves
    stale.write_bytes(b"half an artifact")
    mine = out / ".model.safetensors.notes.tmp"  # not a name squeezer's temporary files have
    mine.write_text("mine")
    result = cli("run", recipe, "--out", out, "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    assert not stale.exists()  # before: it survived the successful resume
    assert mine.read_text() == "mine"


INTERRUPT_WHILE_IMPORTING = """
import os, signal, sys
class Interrupt:  # a Ctrl-C that arrives exactly while {module} is being imported
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
from squeezer.cli import main
sys.exit(main({argv!r}))
"""  # what the console script does


@pytest.mark.parametrize(("module", "argv"), [("typer", ["--version"]), ("rich.console", ["--version"]),
                                              ("squeezer.pipeline", ["run", "--quiet"])])
def test_ctrl_c_while_the_cli_imports_is_one_line_exit_130(tmp_path: Path, module: str, argv: list[str]) -> None:
    if argv[0] == "run":
        argv = [*argv, "--out", str(tmp_path / "o")]
    script = write(tmp_path / "squeezer", INTERRUPT_WHILE_IMPORTING.format(module=module, argv=argv))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: interrupted"], proc.stderr  # before: a traceback


# --- 14: --overwrite replaces squeezer's files only ---------------------------------------------------


def test_overwrite_keeps_the_users_files_in_checkpoints(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.toml", TRAIN)
    out = tmp_path / "out"
    assert cli("run", recipe, "--out", out, "--quiet").exit_code == 0
    notes = out / "checkpoints" / "notes.txt"
    notes.write_text("mine")
    (out / "checkpoints" / "old").mkdir()
    (out / "checkpoints" / ".last.safetensors.zzzzzzzz.tmp").write_bytes(b"stale")
    before = (out / "model.safetensors").stat().st_mtime_ns
    result = cli("run", recipe, "--out", out, "--overwrite", "--quiet")
    assert result.exit_code == 0, result.output
    assert notes.read_text() == "mine" and (out / "checkpoints" / "old").is_dir()  # before: rmtree'd
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.safetensors", "notes.txt", "old"]
    assert (out / "model.safetensors").stat().st_mtime_ns != before


def test_overwrite_deletes_exactly_squeezers_files(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    for name in ("checkpoints/last.safetensors", "checkpoints/.last.safetensors.abcd1234.tmp", "model.safetensors",
                 ".model.safetensors.abcd1234.tmp", "model.onnx", "checkpoints/last.safetensors.bak", "notes.txt"):
        (tmp_path / name).write_text("x")
    outdir.remove_own_files(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "checkpoints", "checkpoints/last.safetensors.bak", "model.onnx", "notes.txt"]
    from squeezer.pipeline import runner

    assert Path(outdir.CHECKPOINT_DIR) / outdir.CHECKPOINT_NAME == runner.CHECKPOINT
    assert outdir.ARTIFACT_NAME == runner.ARTIFACT


# --- 15: huge values, bad seeds, empty data, concurrent runs --------------------------------------------


@pytest.mark.parametrize("scheduler", ["geometric", "cubic"])
def test_a_huge_number_of_rounds_is_refused_at_once(scheduler: str) -> None:
    text = _stages(f'type = "prune"\nscheduler = {{ name = "{scheduler}", target = 0.5, rounds = 100000000 }}\n')
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"r\.toml: stages\[0\]\.scheduler: .*'rounds' must be <= 1000"):
        parse_recipe(text, source="r.toml", registry=squeezer.load_registry(autoload=False))
    assert time.monotonic() - start < 5  # before: over a minute


def test_a_lazily_endless_schedule_is_refused_at_once() -> None:
    registry = squeezer.load_registry(autoload=False, plugins=[hostile_support.Schedules()])
    start = time.monotonic()
    with pytest.raises(PluginError, match=r"stages\[0\]\.scheduler \(endless\): schedule has more than 10,000 rounds"):
        parse_recipe(_stages('type = "prune"\nscheduler = "endless"\n'), registry=registry)
    assert time.monotonic() - start < 5


def test_a_seed_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.toml", TRAIN)
    for seed in (2**64, 2**63, -1):  # before: 2**64 was 'internal error: ValueError: Overflow', exit 1
        one_line_error(cli("run", recipe, "--out", tmp_path / "o", "--seed", seed), 2, "--seed")
        with pytest.raises(ConfigError, match=r"^seed: must be an integer in 0\.\.9223372036854775807"):
            squeezer.run(load_recipe(recipe), out=tmp_path / "o", seed=seed)
        bad = write(tmp_path / "bad.toml", f"seed = {seed}\n{TRAIN}")
        one_line_error(cli("recipe", "validate", bad), 2, f"{bad}: seed: must be an integer in 0..")
        one_line_error(cli("run", bad, "--out", tmp_path / "o"), 2, f"{bad}: seed:")
    assert not (tmp_path / "o").exists()
    assert cli("run", recipe, "--out", tmp_path / "o", "--seed", 2**63 - 1, "--quiet").exit_code == 0


def test_an_empty_training_loader_is_refused_before_training(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.toml", TRAIN.replace("helpers:loaders", "hostile_support:empty_loaders"))
    out = tmp_path / "out"
    # before: exit 0 with an untrained artifact
    one_line_error(cli("run", recipe, "--out", out), 2, "data.factory", "hostile_support:empty_loaders", "no batch")
    assert not out.exists() or not any(out.rglob("*"))


def _hold_lock_in_a_child(out: Path) -> subprocess.Popen[str]:
    code = ("import sys, time\nfrom squeezer.pipeline.outdir import OutputLock\n"
            f"lock = OutputLock({str(out)!r}).__enter__()\nprint('locked', flush=True)\ntime.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_a_second_run_into_a_busy_output_directory_is_refused(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.toml", TRAIN)
    out = tmp_path / "out"
    child = _hold_lock_in_a_child(out)  # another run, mid-way
    try:
        for flags in ([], ["--resume"], ["--overwrite"]):  # before: both runs proceeded
            one_line_error(cli("run", recipe, "--out", out, *flags), 2, str(out),
                           "another squeezer run is using this output directory")
        with pytest.raises(ConfigError, match="another squeezer run"):
            squeezer.run(load_recipe(recipe), out=out)
    finally:
        child.send_signal(signal.SIGKILL)  # a killed run's lock dies with it
        child.wait(timeout=60)
    assert (out / outdir.LOCK_NAME).exists()  # left behind by the kill ...
    result = cli("run", recipe, "--out", out, "--quiet")  # ... and neither blocks nor counts as content
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "model.safetensors"]  # lock removed


def test_a_killed_runs_surviving_worker_does_not_hold_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = ("import os, sys, time\nfrom squeezer.pipeline.outdir import OutputLock\n"
            f"lock = OutputLock({str(out)!r}).__enter__()\n"
            "pid = os.fork()\nif pid == 0:\n    null = os.open(os.devnull, os.O_RDWR)\n"  # a DataLoader worker
            "    os.dup2(null, 1)\n    os.dup2(null, 2)\n    time.sleep(60)\n    os._exit(0)\n"
            "print(pid, flush=True)\nos._exit(9)\n")  # the run dies without releasing anything
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    worker = int(proc.stdout.strip())
    try:
        with outdir.OutputLock(out):  # the worker still runs, holding a copy of the descriptor
            os.kill(worker, 0)
    finally:
        os.kill(worker, signal.SIGKILL)


def test_the_lock_is_released_on_every_way_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), outdir.OutputLock(out):
        assert (out / outdir.LOCK_NAME).exists()
        with pytest.raises(ConfigError), outdir.OutputLock(out):  # a second lock, even in this process
            pass
        raise RuntimeError("a failed run")
    assert not out.exists()  # created for the lock, left empty: removed
    out.mkdir()
    with outdir.OutputLock(out, enabled=False):  # ranks other than 0 under torchrun
        assert not (out / outdir.LOCK_NAME).exists()
    with outdir.OutputLock(out):
        handle = os.open(out / outdir.LOCK_NAME, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(handle)
    assert out.is_dir() and not any(out.iterdir())  # it existed before: kept
    recipe = parse_recipe(FACTORIES + '[[stages]]\ntype = "train"\nepochs = 1\nlr = 1e-3\n')
    with pytest.raises(ConfigError):  # an error inside the run releases the lock too
        squeezer.run(recipe, out=out, resume=True)
    assert not any(out.iterdir())


# --- 16: byte-reproducible artifacts ----------------------------------------------------------------


def test_two_runs_into_different_directories_write_the_same_bytes(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.toml", "seed = 3\n" + FACTORIES + '[[stages]]\ntype = "prune"\n'
                   'scheduler = { name = "one_shot", target = 0.5 }\nquantizer = { name = "minmax", bits = 4 }\n'
                   "epochs_per_round = 1\n")
    outputs = [tmp_path / "a", tmp_path / "deeper" / "b"]
    for out in outputs:
        result = cli("run", recipe, "--out", out, "--quiet")
        assert result.exit_code == 0, result.output
    first, second = ((out / "model.safetensors").read_bytes() for out in outputs)
    assert first == second  # before: the recorded output directory differed
    assert b"deeper" not in second
