"""Issue 19, a new user's first hour: threads, --nproc checks before launching, factories that
cannot be found, the wrong file for eval/export, and the schema's text. Each user-input error is
one line on stderr and exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.cli.test_cli import TINY_RECIPE, assert_one_line_error, finished_run, invoke, tiny, write

__all__ = ["finished_run", "tiny"]  # the module-scoped fixtures of test_cli, shared here

# --- threads -----------------------------------------------------------------------------------


def test_threads_per_process() -> None:
    from squeezer.pipeline.runner import threads_per_process

    assert threads_per_process(1, 1) == 1
    assert threads_per_process(4, 1) == 4
    assert threads_per_process(4, 2) == 2  # under --nproc 2 each rank uses its share
    assert threads_per_process(1, 2) == 1  # never fewer than one
    assert threads_per_process(0, 1) is None  # torch's default, untouched
    assert threads_per_process(0, 2) == max(1, (os.cpu_count() or 1) // 2)


def test_recipe_threads_field(tmp_path: Path) -> None:
    from squeezer.recipe import load_recipe

    assert load_recipe(write(tmp_path / "r.toml", TINY_RECIPE)).threads == 1  # the default
    assert load_recipe(write(tmp_path / "r.toml", "threads = 0\n" + TINY_RECIPE)).threads == 0
    bad = write(tmp_path / "bad.toml", "threads = -1\n" + TINY_RECIPE)
    assert_one_line_error(invoke("recipe", "validate", bad), 2, "threads")
    assert_one_line_error(invoke("run", bad, "--out", tmp_path / "o"), 2, "threads")


def test_run_sets_threads_for_the_run_and_restores_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import squeezer
    from squeezer.pipeline import runner

    seen: list[int] = []
    real = runner._run_locked

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_run_locked", spy)
    recipe = write(tmp_path / "r.toml", TINY_RECIPE.split("[[stages]]")[0] + '[[stages]]\ntype = "train"\nepochs = 0\n')
    before = torch.get_num_threads()
    squeezer.run(recipe, out=tmp_path / "a")
    squeezer.run(recipe, out=tmp_path / "b", threads=2)
    assert seen == [1, 2]
    assert torch.get_num_threads() == before
    result = invoke("run", recipe, "--out", tmp_path / "c", "--threads", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert seen[-1] == 3
    assert_one_line_error(invoke("run", recipe, "--threads", "-1"), 2, "--threads")


# --- --nproc: the output directory is checked once, before any rank starts ---------------------


@pytest.fixture()
def no_launch(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    from squeezer.cli import launch

    calls: list[Any] = []
    monkeypatch.setattr(launch, "launch", lambda *a, **k: calls.append((a, k)) or 0)
    return calls


def test_nproc_refuses_a_non_empty_output_dir_before_launching(tmp_path: Path, no_launch: list[Any]) -> None:
    recipe = write(tmp_path / "r.toml", TINY_RECIPE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"x")
    assert_one_line_error(invoke("run", recipe, "--out", out, "--nproc", "2"), 2,
                          f"{out}: output directory is not empty", "--resume", "--overwrite")
    assert_one_line_error(invoke("run", recipe, "--out", tmp_path / "none", "--nproc", "2", "--resume"), 2,
                          "nothing to resume")
    (tmp_path / "file").write_text("")
    assert_one_line_error(invoke("run", recipe, "--out", tmp_path / "file", "--nproc", "2"), 2,
                          "not a directory")
    bad = write(tmp_path / "bad.toml", TINY_RECIPE.replace('type = "prune"', 'type = "prune"\nimportance = "l11"'))
    assert_one_line_error(invoke("run", bad, "--out", tmp_path / "o2", "--nproc", "2"), 2, "did you mean 'l1'")
    assert no_launch == []
    # accepted: the ranks get this command's arguments, minus --nproc
    result = invoke("run", recipe, "--out", out, "--nproc", "2", "--overwrite", "--seed", "3", "--threads", "2")
    assert result.exit_code == 0, result.output
    (nproc, rank_args), _ = no_launch[0]
    assert nproc == 2
    assert rank_args == ["run", str(recipe), "--out", str(out), "--overwrite", "--seed", "3", "--threads", "2"]


def test_interrupt_hints_name_nproc() -> None:
    from squeezer.cli.launch import resume_command

    assert resume_command(Path("r.toml"), Path("o"), None, 2, None, True) == (
        "interrupted; resume with: squeezer run r.toml --out o --nproc 2 --resume")
    assert resume_command(None, Path("o"), 1, 2, 1, False) == (
        "interrupted before the first checkpoint; start again with: "
        "squeezer run --out o --seed 1 --threads 1 --nproc 2 --overwrite")


def test_rank_errors_are_reported_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from types import SimpleNamespace

    from squeezer.cli import launch
    from squeezer.cli.errors import CliError

    for rank in (0, 1):
        (tmp_path / f"rank{rank}.json").write_text(json.dumps({"code": 2, "message": "data: bad"}))
    failures = {0: SimpleNamespace(exitcode=2), 1: SimpleNamespace(exitcode=2)}
    assert launch._report(SimpleNamespace(failures=failures), tmp_path, lambda: "hint") == 2
    assert capsys.readouterr().err == "error: data: bad\n"
    for rank in (0, 1):
        (tmp_path / f"rank{rank}.json").write_text(json.dumps({"code": 130, "message": "interrupted"}))
    with pytest.raises(CliError, match=r"^hint$"):
        launch._report(SimpleNamespace(failures=failures), tmp_path, lambda: "hint")


def _wait_for(path: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.2)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_nproc_end_to_end_interrupt_and_resume(tmp_path: Path) -> None:
    """A real `--nproc 2` run: Ctrl-C after the first checkpoint gives one line with the command to
    resume (--nproc 2 included), and that command finishes the run."""
    recipe = write(tmp_path / "r.toml", TINY_RECIPE.replace("epochs = 1\n", "epochs = 40\n", 1))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "squeezer", "run", str(recipe), "--out", str(out), "--nproc", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(out / "checkpoints" / "last.safetensors", 120)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        f"error: interrupted; resume with: squeezer run {recipe} --out {out} --nproc 2 --resume"], stderr
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().endswith(f"artifact: {out / 'model.safetensors'}")
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {out}: output directory is not empty; pass --resume to continue or --overwrite to replace it"]


# --- factories ---------------------------------------------------------------------------------


def test_validate_finds_factories_without_running_them(tmp_path: Path) -> None:
    typo = write(tmp_path / "typo.toml", TINY_RECIPE.replace("digits:make_model", "digits:make_modle"))
    assert_one_line_error(invoke("recipe", "validate", typo), 2, "model.factory", "defines no 'make_modle'",
                          "did you mean 'make_model'")
    missing = write(tmp_path / "missing.toml", TINY_RECIPE.replace("squeezer.examples.digits:make_model",
                                                                   "nosuchmodule_xyz:make_model"))
    assert_one_line_error(invoke("recipe", "validate", missing), 2, "model.factory", "nosuchmodule_xyz",
                          "only the current directory", "installed packages")


def test_factory_next_to_the_recipe_from_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymodel_issue19.py").write_text("def make_model():\n    pass\n")
    recipe = write(project / "r.toml", TINY_RECIPE.replace("squeezer.examples.digits:make_model",
                                                           "mymodel_issue19:make_model"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for args in (["recipe", "validate", recipe], ["run", recipe, "--out", tmp_path / "o"]):
        assert_one_line_error(invoke(*args), 2, "mymodel_issue19", "only the current directory",
                              f"run squeezer from {project}")
    monkeypatch.syspath_prepend(str(project))  # found from there
    assert invoke("recipe", "validate", recipe).exit_code == 0


def test_factory_import_error_from_python_names_what_is_importable() -> None:
    from squeezer.errors import ConfigError
    from squeezer.factories import resolve

    with pytest.raises(ConfigError, match=r"only the current directory .* and installed packages are importable"):
        resolve("nosuchmodule_xyz:f", "model")


def test_factory_path_without_colon(tmp_path: Path) -> None:
    path = write(tmp_path / "r.toml", TINY_RECIPE.replace("digits:make_model", "digits.make_model"))
    assert_one_line_error(invoke("recipe", "validate", path), 2, "model.factory", "expected 'module:function'")


# --- the schema --------------------------------------------------------------------------------


def test_prune_stage_epochs_is_refused_and_not_documented(tmp_path: Path) -> None:
    import json

    path = write(tmp_path / "r.toml", TINY_RECIPE.replace("epochs_per_round = 1", "epochs_per_round = 1\nepochs = 3"))
    assert_one_line_error(invoke("recipe", "validate", path), 2, "stages[1].epochs", "epochs_per_round")
    doc = json.loads(invoke("recipe", "schema", "--json").stdout)
    prune = [f["name"] for f in doc["stages"]["prune"]["fields"]]
    assert "epochs" not in prune and "epochs_per_round" in prune
    text = invoke("recipe", "schema").stdout
    assert "Optim | None" not in text and "[training] keys" in text


# --- eval and export take the file the user has -------------------------------------------------


def test_eval_takes_a_checkpoint_or_a_run_directory(finished_run: tuple[Path, Any]) -> None:
    import json

    out, _ = finished_run
    artifact = json.loads(invoke("eval", out / "model.safetensors", "--json").stdout)
    ckpt = json.loads(invoke("eval", out / "checkpoints" / "last.safetensors", "--json").stdout)
    run_dir = json.loads(invoke("eval", out, "--json").stdout)
    assert artifact["accuracy"] == ckpt["accuracy"] == run_dir["accuracy"]
    assert run_dir["artifact"] == str(out / "model.safetensors")


def test_export_onnx_takes_the_artifact(finished_run: tuple[Path, Any], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import shutil

    out, _ = finished_run
    target = tmp_path / "m.onnx"
    result = invoke("export", out / "model.safetensors", "--out", target, "--format", "onnx")
    assert result.exit_code == 0, result.output
    text = result.stdout.replace("\n", " ")
    assert "final checkpoint" in text and target.is_file()
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(out / "model.safetensors", lone / "model.safetensors")
    result = invoke("export", lone, "--format", "onnx")  # without --out: model.onnx in the run directory
    assert result.exit_code == 0, result.output
    assert "float initializers" in result.stdout.replace("\n", " ") and (lone / "model.onnx").is_file()
    before = (lone / "model.onnx").read_bytes()
    assert_one_line_error(invoke("export", lone / "model.safetensors", "--format", "onnx"), 2,
                          f"{lone / 'model.onnx'}: already exists", "--out")
    assert (lone / "model.onnx").read_bytes() == before


def test_export_of_an_artifact_to_an_artifact_names_the_right_command(finished_run: tuple[Path, Any],
                                                                      tmp_path: Path) -> None:
    out, _ = finished_run
    assert_one_line_error(invoke("export", out / "model.safetensors", "--out", tmp_path / "x.safetensors"), 2,
                          "already a squeezer artifact", "--format onnx", "CHECKPOINT")
    assert not (tmp_path / "x.safetensors").exists()
    assert_one_line_error(invoke("eval", tmp_path), 2, "not a run's output directory")


# --- progress at 80 columns ----------------------------------------------------------------------


def _render_at_80(live: bool) -> list[str]:
    import io
    import re

    from rich.console import Console

    from squeezer.cli.progress import ProgressRenderer
    from squeezer.pipeline.events import EpochEnded, Pruned, RunStarted, StageEnded, StageStarted, StepEnded

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=live, width=80, color_system=None)
    with ProgressRenderer(console, live=live) as r:
        r(RunStarted("r.toml", ("dense", "phase1", "phase2"), "out"))
        r(StageStarted(0, "dense", "train", 12, 22))
        r(EpochEnded(0, 11, 0.0412, 0.993, 0.0, "fp32"))
        r(StageEnded(0, "dense", 0.993))
        r(StageStarted(1, "phase1", "prune", 20, 22))
        r(Pruned(1, 0, 0.45, 0.451, ()))
        r(EpochEnded(1, 3, 0.1, 0.98, 0.451, "4/8"))
        r(Pruned(1, 1, 0.698, 0.698, ()))
        r(StepEnded(1, 4, 0, 0.2))
        if live:
            row = r.progress.tasks[0].fields if r.progress is not None else {}
            assert row["sparsity"] == "69.8%"  # the live row shows the round just pruned to
        r(StageEnded(1, "phase1", 0.97))
        r(StageStarted(2, "phase2", "mutual", 12, 22))
        r(EpochEnded(2, 1, 0.04, 0.99, 0.95, "4/8",
                     {"student_ce": 0.04, "teacher_loss": 0.05, "teacher_accuracy": 0.995}))
        r(EpochEnded(2, 2, 7.0712, 0.991, 0.95, "4/8",
                     {"student_ce": 0.0412, "student_kd": 7.03, "teacher_loss": 7.1, "teacher_accuracy": 0.995}))
        if live:
            assert r.progress is not None and len(r.progress.tasks) == 1  # finished stages collapsed
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue()).replace("\r", "\n")
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("live", [True, False], ids=["terminal", "plain"])
def test_progress_fits_80_columns_and_shows_ce_and_kd(live: bool) -> None:
    lines = _render_at_80(live)
    assert max(len(line) for line in lines) < 80, max(lines, key=len)
    text = "\n".join(lines)
    assert "student ce 0.0412 + kd 7.0300 (epoch mean)" in text
    assert "teacher loss 7.1000, acc 99.5%" in text
    assert "KD has started" in text and text.count("KD has started") == 1
    assert "2/3 phase1 done:" in text and "pruning round 2" in text


# --- help and output text ------------------------------------------------------------------------


def test_help_text_is_not_read_as_markup() -> None:
    text = invoke("export", "--help").stdout
    assert "-e '.[onnx]'" in text and "[model] and [data]" in text
    assert "[model] and [data]" in invoke("eval", "--help").stdout


def test_plugin_descriptions_show_no_rst_markup() -> None:
    text = invoke("plugins", "list").stdout + invoke("recipe", "schema").stdout
    assert "``" not in text and ":class:" not in text


def test_json_stage_accuracy_by_name_and_sizes_in_whole_bytes(tmp_path: Path) -> None:
    import json

    recipe = write(tmp_path / "r.toml", TINY_RECIPE)
    result = invoke("run", recipe, "--out", tmp_path / "o", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["stage_accuracy"]) == ["dense", "prune", "mutual"]
    assert all(isinstance(v, int) for v in data["sizes"].values()), data["sizes"]


def test_stage_keys_of_stages_sharing_a_name() -> None:
    from squeezer.cli.summary import stage_keys

    assert stage_keys(["dense", "prune", "prune"]) == ["dense", "1:prune", "2:prune"]
