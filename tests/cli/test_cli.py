"""The ``squeezer`` command line: every command, its output, and its handling of bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import squeezer
from squeezer.cli import app

runner = CliRunner()

HAS_LSQ = "lsq" in squeezer.load_registry(autoload=False).names("quantizer")

TINY_RECIPE = f"""\
seed = 0

[model]
factory = "squeezer.examples.digits:make_model"
width = 8

[data]
factory = "squeezer.examples.digits:make_loaders"
batch_size = 128

[training]
lr = 0.003

[[stages]]
type = "train"
name = "dense"
epochs = 1

[[stages]]
type = "prune"
scheduler = {{ name = "one_shot", target = 0.5 }}
{'quantizer = { name = "lsq", bits = 4 }' if HAS_LSQ else ''}
epochs_per_round = 1

[[stages]]
type = "mutual"
warmup_epochs = 1
epochs = 1
"""


def invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Any, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one line on stderr starting with 'error: ', no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("recipes") / "tiny.toml", TINY_RECIPE)


@pytest.fixture(scope="module")
def finished_run(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One real run of the tiny recipe, shared by the commands that read its outputs."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = invoke("run", tiny, "--out", out)
    return out, result


# --- the process as a whole: no torch for help and plugins, python -m, --version ----------------


def _subprocess(argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "from squeezer.cli import main\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    print('exit', exc.code)\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "SQUEEZER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("argv", [["squeezer", "--help"], ["squeezer", "plugins", "list"],
                                  ["squeezer", "plugins", "list", "--json"], ["squeezer", "run", "--help"]])
def test_help_and_plugins_list_do_not_import_torch(argv: list[str]) -> None:
    proc = _subprocess(argv)
    lines = proc.stdout.strip().splitlines()
    assert lines[-2:] == ["exit 0", "torch imported: False"], proc.stdout + proc.stderr


def test_python_dash_m_and_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "squeezer", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"squeezer {squeezer.__version__}"
    result = invoke("--version")
    assert result.exit_code == 0 and squeezer.__version__ in result.stdout


@pytest.mark.parametrize("command", [
    [], ["run"], ["plugins"], ["plugins", "list"], ["recipe"], ["recipe", "validate"], ["recipe", "show"],
    ["recipe", "schema"], ["inspect"], ["eval"], ["export"],
])
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert "Example" in result.stdout
    assert "squeezer " in result.stdout.split("Example", 1)[1]


def test_group_without_subcommand_shows_help() -> None:
    result = invoke("recipe")
    assert "validate" in result.stdout and "schema" in result.stdout


# --- usage errors: one line, exit 2 ------------------------------------------------------------


@pytest.mark.parametrize(("args", "needle"), [
    (["run", "--bogus"], "--bogus"),
    (["recipe", "validate"], "Missing argument"),
    (["export", "x.safetensors"], "--out"),
    (["export", "x.safetensors", "--out", "y", "--format", "zip"], "--format"),
    (["run", "--seed", "abc"], "--seed"),
    (["run", "--resume", "--overwrite"], "exclude each other"),
    (["frobnicate"], "frobnicate"),
])
def test_usage_errors_are_one_line_exit_2(args: list[str], needle: str) -> None:
    assert_one_line_error(invoke(*args), 2, needle)


# --- plugins -----------------------------------------------------------------------------------


def test_plugins_list_groups_by_extension_point() -> None:
    result = invoke("plugins", "list")
    assert result.exit_code == 0, result.output
    for heading in ("importance", "scheduler", "quantizer", "distillation_loss"):
        assert heading in result.stdout
    for name in ("l1", "geometric", "one_shot", "hinton", "magnitude", "schedules"):
        assert name in result.stdout


def test_plugins_list_json() -> None:
    result = invoke("plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    registry = squeezer.load_registry()
    assert set(listing) == {"importance", "scheduler", "quantizer", "distillation_loss", "task"}
    for info in registry:
        entry = next(e for e in listing[info.kind] if e["name"] == info.name)
        assert entry["plugin"] == info.plugin
        assert entry["version"] == info.version
        assert entry["help"] == info.help


# --- recipe validate / show / schema -------------------------------------------------------------


def test_recipe_validate_ok(tiny: Path) -> None:
    result = invoke("recipe", "validate", tiny)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (f"ok: {tiny} (3 stages; factories found, not run: "
                                     "squeezer.examples.digits:make_model, squeezer.examples.digits:make_loaders)")


def test_recipe_validate_bundled_recipes() -> None:
    from squeezer.pipeline import DEFAULT_RECIPE

    for path in sorted(DEFAULT_RECIPE.parent.glob("*.toml")):
        recipe = tomllib.loads(path.read_text())
        uses_lsq = "lsq" in path.read_text()
        if uses_lsq and not HAS_LSQ:
            continue
        result = invoke("recipe", "validate", path)
        assert result.exit_code == 0, result.output
        assert f"({len(recipe['stages'])} stages;" in result.stdout


def test_recipe_validate_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert_one_line_error(invoke("recipe", "validate", missing), 2, str(missing), "not found")


BAD_RECIPES = {
    "bad field value": ("epochs = -1", "stages[1].epochs"),
    "unknown plugin name": ('importance = "l11"', "did you mean 'l1'"),
    "unknown stage type": ('type = "trian"', "did you mean 'train'"),
    "bad plugin option": ('scheduler = { name = "one_shot", target = 1.5 }', "stages[1].scheduler"),
    "unknown field": ("epoch = 3", "stages[1].epoch"),
}


def _bad_recipe(tmp_path: Path, line: str) -> Path:
    text = TINY_RECIPE.replace('type = "prune"', f'type = "prune"\n{line}')
    if line.startswith("type ="):
        text = TINY_RECIPE.replace('type = "prune"', line)
    if line.startswith("scheduler ="):
        text = TINY_RECIPE.replace('scheduler = { name = "one_shot", target = 0.5 }', line)
    return write(tmp_path / "bad.toml", text)


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_recipe_validate_invalid(case: str, tmp_path: Path) -> None:
    line, needle = BAD_RECIPES[case]
    path = _bad_recipe(tmp_path, line)
    message = assert_one_line_error(invoke("recipe", "validate", path), 2, needle)
    assert str(path) in message


def test_unknown_plugin_name_error_names_file_and_field(tmp_path: Path) -> None:
    path = _bad_recipe(tmp_path, 'importance = "l11"')
    message = assert_one_line_error(invoke("recipe", "validate", path), 2)
    assert f"{path}: stages[1].importance" in message


def test_recipe_validate_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "[model\nfactory = 1\n")
    assert_one_line_error(invoke("recipe", "validate", path), 2, "invalid TOML")


def test_recipe_show_is_resolved_and_round_trips(tiny: Path, tmp_path: Path) -> None:
    from squeezer.recipe import load_recipe, recipe_to_dict

    result = invoke("recipe", "show", tiny)
    assert result.exit_code == 0, result.output
    expected = recipe_to_dict(load_recipe(tiny))
    shown = tomllib.loads(result.stdout)  # always TOML (tomli-w is a declared dependency), never JSON
    assert shown["training"]["weight_decay"] == 0.0  # a default, filled in
    assert shown["stages"][1]["min_density"] == expected["stages"][1]["min_density"]
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    assert recipe_to_dict(load_recipe(again)) == expected

    as_json = invoke("recipe", "show", tiny, "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == json.loads(json.dumps(expected))


def test_recipe_show_invalid(tmp_path: Path) -> None:
    path = _bad_recipe(tmp_path, 'type = "trian"')
    assert_one_line_error(invoke("recipe", "show", path), 2, "stages[1].type")


def test_recipe_schema_json_covers_sections_stages_and_plugins() -> None:
    from squeezer.recipe import STAGE_TYPES

    result = invoke("recipe", "schema", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc["sections"]) == {"model", "data", "training", "budget", "targets"}
    assert set(doc["stages"]) == set(STAGE_TYPES)
    prune = {f["name"]: f for f in doc["stages"]["prune"]["fields"]}
    assert prune["scheduler"]["required"] is True
    assert prune["min_density"]["default"] == 0.005 and prune["min_density"]["type"] == "float"
    assert prune["min_density"]["help"]
    assert prune["importance"]["default"] == {"name": "lamp", "options": {}}
    activations = {f["name"]: f for f in doc["activations"]["fields"]}
    assert activations["bits"]["default"] == 8 and "overrides" in activations
    assert [f["name"] for f in doc["activation_overrides"]["fields"]] == ["pattern", "bits", "signed", "skip"]
    registry = squeezer.load_registry()
    for info in registry:
        entry = next(e for e in doc["plugins"][info.kind] if e["name"] == info.name)
        assert [o["name"] for o in entry["options"]] == [a.name for a in info.options() if a.init]
    one_shot = next(e for e in doc["plugins"]["scheduler"] if e["name"] == "one_shot")
    assert one_shot["options"] == [
        {"name": "target", "type": "float", "required": True, "help": "final sparsity in [0, 1]"}
    ]


def test_recipe_schema_text() -> None:
    result = invoke("recipe", "schema")
    assert result.exit_code == 0, result.output
    for needle in ("[training]", "[[stages]] type = 'mutual'", "warmup_epochs", "scheduler 'geometric'",
                   "rounds", "(required)", "activations = { bits = 8, ... }", "calibration_batches"):
        assert needle in result.stdout, needle


# --- run ---------------------------------------------------------------------------------------


def test_run_prints_progress_summary_and_artifact(finished_run: tuple[Path, Any]) -> None:
    out, result = finished_run
    assert result.exit_code == 0, result.output
    text = result.stdout
    # not a terminal: no progress bars, one plain line per epoch
    assert "━" not in text.split("summary")[0]
    epoch_lines = [line for line in text.splitlines() if " epoch " in line and "loss" in line]
    assert len(epoch_lines) == 1 + 1 + 2
    assert "3/3 mutual  epoch 2/2" in text
    assert all(len(line) < 80 for line in epoch_lines)  # paths (the recipe line) may be longer
    # the summary
    assert "summary" in text
    assert "accuracy: dense" in text
    for column in ("parameter", "numel", "nonzeros", "sparsity", "bits"):
        assert column in text
    assert "FP32 dense" in text and "torch.save" in text and "artifact" in text
    assert "not skipped at inference" in text
    artifact = out / "model.safetensors"
    assert artifact.is_file()
    assert f"artifact: {artifact}" in text


def test_run_json(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("run", tiny, "--out", out, "--json", "--seed", "1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert Path(data["artifact"]) == out / "model.safetensors" and Path(data["artifact"]).is_file()
    assert 0.0 <= data["accuracy"] <= 1.0 and 0.0 <= data["dense_accuracy"] <= 1.0
    assert abs(data["sparsity"] - 0.5) < 0.01
    assert {layer["parameter"] for layer in data["layers"]} >= {"0.weight", "14.weight"}
    sizes = data["sizes"]
    assert sizes["artifact_bytes"] == Path(data["artifact"]).stat().st_size
    assert sizes["dense_fp32_bytes"] > sizes["artifact_bytes"]
    assert sizes["torch_save_bytes"] > sizes["artifact_bytes"]
    assert data["artifact_report"]["file_bytes"] == sizes["artifact_bytes"]


def test_run_refuses_non_empty_output_dir(finished_run: tuple[Path, Any], tiny: Path) -> None:
    out, _ = finished_run
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert_one_line_error(invoke("run", tiny, "--out", out), 2, str(out), "--resume", "--overwrite")
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def test_run_resume_of_a_finished_run_exports_again(finished_run: tuple[Path, Any], tiny: Path) -> None:
    out, _ = finished_run
    result = invoke("run", tiny, "--out", out, "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(f"artifact: {out / 'model.safetensors'}")
    assert len(result.stdout.strip().splitlines()) == 1


def test_run_resume_with_another_seed_is_refused(finished_run: tuple[Path, Any], tiny: Path) -> None:
    out, _ = finished_run
    assert_one_line_error(invoke("run", tiny, "--out", out, "--resume", "--seed", "7"), 2, "cannot resume")


def test_run_missing_and_invalid_recipe(tmp_path: Path) -> None:
    assert_one_line_error(invoke("run", tmp_path / "missing.toml"), 2, "missing.toml", "not found")
    bad = _bad_recipe(tmp_path, 'importance = "l11"')
    assert_one_line_error(invoke("run", bad, "--out", tmp_path / "o"), 2, "did you mean 'l1'")
    assert not (tmp_path / "o").exists()


def test_run_bad_factory_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "r.toml", TINY_RECIPE.replace("digits:make_model", "digits:no_such_model"))
    assert_one_line_error(invoke("run", path, "--out", tmp_path / "o"), 2, "model.factory")


def _fake_run(events: list[Any], error: BaseException) -> Any:
    def fake(recipe: Any, *, sink: Any, **kwargs: Any) -> Any:
        for event in events:
            sink(event)
        raise error

    return fake


def test_run_ctrl_c_prints_the_resume_command(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from squeezer import pipeline
    from squeezer.pipeline.events import Checkpointed, RunStarted

    out = tmp_path / "o"
    events = [RunStarted(str(tiny), ("dense",), str(out)), Checkpointed(str(out / "checkpoints/last.safetensors"))]
    monkeypatch.setattr(pipeline, "run", _fake_run(events, KeyboardInterrupt()))
    message = assert_one_line_error(invoke("run", tiny, "--out", out), 130)
    assert message == f"error: interrupted; resume with: squeezer run {tiny} --out {out} --resume"

    monkeypatch.setattr(pipeline, "run", _fake_run(events[:1], KeyboardInterrupt()))
    message = assert_one_line_error(invoke("run", tiny, "--out", out, "--seed", "3"), 130)
    assert "before the first checkpoint" in message and "--seed 3 --overwrite" in message


def test_run_failure_during_the_run_exits_1(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from squeezer import pipeline
    from squeezer.errors import TrainingError
    from squeezer.pipeline.events import RunStarted

    started = [RunStarted(str(tiny), ("dense",), str(tmp_path))]
    monkeypatch.setattr(pipeline, "run", _fake_run(started, TrainingError("stages[0] (dense): loss became nan")))
    assert_one_line_error(invoke("run", tiny, "--out", tmp_path / "o"), 1, "loss became nan")


def test_internal_errors_are_one_line_unless_debug(tiny: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from squeezer import pipeline

    monkeypatch.setattr(pipeline, "run", _fake_run([], RuntimeError("boom")))
    assert_one_line_error(invoke("run", tiny, "--out", tmp_path / "o"), 1, "RuntimeError: boom", "--debug")
    for args in (["--debug", "run", tiny], ["run", tiny, "--debug"]):
        result = invoke(*args, "--out", tmp_path / "o")
        assert result.exit_code == 1
        assert "Traceback" in result.stderr and "boom" in result.stderr
    monkeypatch.setenv("SQUEEZER_DEBUG", "1")
    assert "Traceback" in invoke("run", tiny, "--out", tmp_path / "o").stderr


# --- inspect / eval / export ---------------------------------------------------------------------


def test_inspect(finished_run: tuple[Path, Any]) -> None:
    out, _ = finished_run
    artifact = out / "model.safetensors"
    result = invoke("inspect", artifact)
    assert result.exit_code == 0, result.output
    for needle in ("0.weight", "8x1x3x3", "sparsity", "bits", "information bound", "FP32 dense", "file"):
        assert needle in result.stdout, needle
    data = json.loads(invoke("inspect", artifact, "--json").stdout)
    assert data["file_bytes"] == artifact.stat().st_size
    assert data["dense_fp32_bytes"] > data["file_bytes"]
    assert data["bound_bytes"] > 0 and data["layers"][0]["shape"] == [8, 1, 3, 3]


def test_inspect_bad_input(tmp_path: Path) -> None:
    assert_one_line_error(invoke("inspect", tmp_path / "none.safetensors"), 2, "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    assert_one_line_error(invoke("inspect", junk), 2, "junk.safetensors")


def test_eval_uses_the_recorded_recipe(finished_run: tuple[Path, Any], tiny: Path) -> None:
    out, run_result = finished_run
    artifact = out / "model.safetensors"
    result = invoke("eval", artifact)
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.stdout and "450 validation samples" in result.stdout
    data = json.loads(invoke("eval", artifact, tiny, "--json").stdout)
    assert data["samples"] == 450 and data["recipe"] == str(tiny)
    # the loaded artifact reproduces the run's final accuracy
    summary_acc = next(line for line in run_result.stdout.splitlines() if line.startswith("accuracy: dense"))
    assert summary_acc.endswith(f"{100 * data['accuracy']:.1f}%")


def test_eval_with_a_mismatched_recipe_is_one_line(finished_run: tuple[Path, Any], tmp_path: Path) -> None:
    out, _ = finished_run
    other = write(tmp_path / "wide.toml", TINY_RECIPE.replace("width = 8", "width = 16"))
    assert_one_line_error(invoke("eval", out / "model.safetensors", other), 2, "shape")


def test_export_from_checkpoint(finished_run: tuple[Path, Any], tmp_path: Path) -> None:
    out, _ = finished_run
    target = tmp_path / "exported.safetensors"
    result = invoke("export", out / "checkpoints" / "last.safetensors", "--out", target)
    assert result.exit_code == 0, result.output
    assert target.is_file() and f"wrote {target}" in result.stdout.replace("\n", " ")
    a = json.loads(invoke("eval", target, "--json").stdout)
    b = json.loads(invoke("eval", out / "model.safetensors", "--json").stdout)
    assert a["accuracy"] == b["accuracy"]
    # a run directory stands for its last checkpoint
    assert invoke("export", out, "--out", tmp_path / "again.safetensors").exit_code == 0


def test_export_bad_input(tmp_path: Path) -> None:
    assert_one_line_error(invoke("export", tmp_path / "none.safetensors", "--out", tmp_path / "x"), 2,
                          "none.safetensors")
    assert_one_line_error(invoke("export", tmp_path), 2, "--out: name the artifact file")


def test_export_onnx_needs_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnx", "onnxruntime") else real(name, *a))
    result = invoke("export", tmp_path / "ckpt", "--out", tmp_path / "m.onnx", "--format", "onnx")
    assert_one_line_error(result, 1, "pip install -c constraints.txt -e '.[onnx]'")
    assert not (tmp_path / "m.onnx").exists()


def test_export_onnx(finished_run: tuple[Path, Any], tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    import torch

    from squeezer.artifact import load
    from squeezer.examples.digits import digits_tensors, make_model

    out, _ = finished_run
    target = tmp_path / "model.onnx"
    result = invoke("export", out, "--out", target, "--format", "onnx")
    assert result.exit_code == 0, result.output
    text = result.stdout.replace("\n", " ")
    quantized = 5 if HAS_LSQ else 0  # three Conv2d and two Linear layers of the digits model
    assert f"wrote {target}" in text and f"{quantized} quantized weights" in text and "onnxruntime matches" in text
    graph = onnx.load(str(target)).graph
    assert sum(node.op_type == "DequantizeLinear" for node in graph.node) == quantized
    # the ONNX model classifies the validation set as the squeezer artifact does
    _, val = digits_tensors()
    x = val.tensors[0][:64]
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x.numpy()})[0]
    model = load(out / "model.safetensors", make_model(width=8)).eval()
    with torch.no_grad():
        want = model(x).numpy()
    assert (logits.argmax(1) == want.argmax(1)).all()
    assert abs(logits - want).max() < 1e-4


# --- the live renderer -------------------------------------------------------------------------


def test_live_progress_renders_stage_rows_and_metrics() -> None:
    from rich.console import Console

    from squeezer.cli.progress import ProgressRenderer
    from squeezer.pipeline.events import (
        EpochEnded,
        Note,
        Pruned,
        RunStarted,
        StageEnded,
        StageStarted,
        StepEnded,
    )

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    with ProgressRenderer(console, live=True) as renderer:
        renderer(RunStarted("r.toml", ("dense", "phase1"), "out"))
        renderer(StageStarted(0, "dense", "train", 1, 2))
        renderer(StepEnded(0, 0, 0, 2.5))
        renderer(StepEnded(0, 0, 1, 2.0))
        renderer(EpochEnded(0, 0, 2.25, 0.5, 0.0, "fp32"))
        renderer(StageEnded(0, "dense", 0.5))
        renderer(StageStarted(1, "phase1", "prune", 2, 2))
        renderer(Pruned(1, 0, 0.5, 0.5, (("w", 0.5, 0.5),)))
        renderer(StepEnded(1, 1, 0, 1.25))
        renderer(EpochEnded(1, 1, 1.25, 0.75, 0.5, "4/8", {"teacher_accuracy": 0.8}))
        renderer(Note("careful", level="warning"))
    text = buffer.getvalue()
    for needle in ("1/2 dense", "2/2 phase1", "epoch 2/2", "loss 1.2500", "acc 75.0%", "sparsity 50.0%",
                   "bits 4/8", "pruning round 1", "teacher acc 80.0%", "warning: careful"):
        assert needle in text, needle


def test_quiet_renderer_prints_nothing_but_warnings() -> None:
    from rich.console import Console

    from squeezer.cli.progress import ProgressRenderer
    from squeezer.pipeline.events import EpochEnded, Note, RunStarted, StageStarted

    buffer = io.StringIO()
    with ProgressRenderer(Console(file=buffer), live=False, quiet=True) as renderer:
        renderer(RunStarted("r.toml", ("dense",), "out"))
        renderer(StageStarted(0, "dense", "train", 1, 2))
        renderer(EpochEnded(0, 0, 2.25, 0.5, 0.0, "fp32"))
        renderer(Note("hello"))
        renderer(Note("careful", level="warning"))
    assert buffer.getvalue().strip() == "warning: careful"
