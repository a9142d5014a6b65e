"""A file never makes squeezer call a function it names (issue 14, items 1, 6, 8 and 11).

The attacker edits the factory an artifact or checkpoint records (to ``os:system`` with a
``command`` option) and recomputes the checksum, as anyone can. Every consumer (``squeezer.load``,
``squeezer eval``, ``squeezer export``, ``squeezer run --resume``) must refuse or ignore it:
the marker file the command would create never appears.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import squeezer
from squeezer.artifact import format as fmt
from squeezer.artifact.reader import read
from squeezer.cli import app
from squeezer.errors import ArtifactError, ConfigError, UntrustedFactoryError
from squeezer.pipeline import checkpoint
from squeezer.pipeline.loop import CHECKPOINT as CKPT  # checkpoints/last.safetensors
from squeezer.pipeline.loop import Interrupted
from squeezer.recipe import parse_recipe

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from helpers import one_line_error  # noqa: E402

RECIPE = """
seed = 3
[model]
factory = "helpers:tiny"
[data]
factory = "helpers:loaders"
[[stages]]
type = "train"
epochs = 1
[[stages]]
type = "prune"
scheduler = { name = "one_shot", target = 0.5 }
quantizer = { name = "lsq", bits = 4 }
epochs_per_round = 2
"""
runner = CliRunner()


def invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def attack(marker: Path) -> dict[str, Any]:
    """The factory record that would run a shell command creating ``marker``."""
    return {"factory": "os:system", "options": {"command": f"touch {marker}"}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    squeezer.run(parse_recipe(RECIPE), out=out)
    return out


@pytest.fixture()
def run_copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def edit_artifact(path: Path, edit: Any) -> None:
    """Edit an artifact's record and recompute its checksum, as an attacker can."""
    art = read(path)
    doc = {k: v for k, v in art.meta.items() if k not in ("format", "version")}
    edit(doc)
    path.write_bytes(fmt.encode(doc, art.tensors.values()))


def edit_checkpoint(path: Path, edit: Any) -> None:
    tensors, meta = checkpoint.load(path)
    edit(meta)
    checkpoint.save(path, tensors, meta)  # a valid checksum over the edited metadata


# --- artifacts -------------------------------------------------------------------------------


def test_an_artifact_naming_os_system_runs_nothing(run_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    art = run_copy / "model.safetensors"

    def edit(doc: dict[str, Any]) -> None:
        evil = attack(marker)
        doc["info"]["model_factory"], doc["info"]["model_options"] = evil["factory"], evil["options"]
        doc["info"]["recipe"]["model"] = evil
        doc["info"]["recipe"]["data"] = evil

    edit_artifact(art, edit)
    with pytest.raises(UntrustedFactoryError, match=r"'os:system'.*--trust-factory 'os:system'"):
        squeezer.load(art)
    one_line_error(invoke("eval", art), 2, "os:system", "--trust-factory")
    assert not marker.exists()
    # the user's own recipe is the user's word: eval works with it, still running nothing from the file
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    result = invoke("eval", art, recipe)
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.stdout
    assert not marker.exists()


@pytest.mark.parametrize("path", [
    "squeezer.examples.digits:torch.load",  # a trusted module's import of a dangerous module
    "squeezer.examples.digits:DataLoader",  # a callable imported from an untrusted module
    "squeezer.examples.digits:__builtins__.exec",  # a private attribute
    "squeezer.examples:os.system",
])
def test_a_trusted_module_is_no_path_to_other_code(run_copy: Path, path: str) -> None:
    art = run_copy / "model.safetensors"
    edit_artifact(art, lambda doc: doc["info"].update(model_factory=path, model_options={}))
    with pytest.raises((UntrustedFactoryError, ConfigError)):
        squeezer.load(art)


def test_trusted_factory_with_huge_options_is_refused_before_allocating(run_copy: Path) -> None:
    """A trusted factory with options the file chose (a 10^6-channel CNN: 36 TB of weights) is
    first built on the meta device and compared with the file."""
    art = run_copy / "model.safetensors"
    edit_artifact(art, lambda doc: doc["info"].update(model_factory="squeezer.examples.digits:make_model",
                                                      model_options={"width": 10**6}))
    with pytest.raises(ArtifactError, match="does not fit the model"):
        squeezer.load(art)


def test_trust_from_code_and_environment(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    art = run_copy / "model.safetensors"
    with pytest.raises(UntrustedFactoryError, match="'helpers:tiny'"):
        squeezer.load(art)
    expected = squeezer.load(art, trust=["helpers:tiny"])
    monkeypatch.setenv("SQUEEZER_TRUST_FACTORIES", "helpers")
    got = squeezer.load(art)
    for (name, a), (_, b) in zip(expected.state_dict().items(), got.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    result = invoke("eval", art)  # the environment trusts helpers: the recorded recipe is used
    assert result.exit_code == 0, result.output


def test_the_factory_loads_call_is_wrapped(run_copy: Path) -> None:
    """Item 6: a failure of the factory that load() calls is one SqueezerError naming it."""
    art = run_copy / "model.safetensors"
    edit_artifact(art, lambda doc: doc["info"].update(model_factory="helpers:raises", model_options={}))
    with pytest.raises(ConfigError, match="factory 'helpers:raises' raised RuntimeError"):
        squeezer.load(art, trust=["helpers"])
    edit_artifact(art, lambda doc: doc["info"].update(model_factory="helpers:exits", model_options={}))
    with pytest.raises(ConfigError, match=r"factory 'helpers:exits' called sys.exit\(0\)"):
        squeezer.load(art, trust=["helpers"])


# --- checkpoints -----------------------------------------------------------------------------


def test_a_checkpoint_naming_os_system_runs_nothing(run_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    def edit(meta: dict[str, Any]) -> None:
        meta["recipe"]["model"] = attack(marker)
        meta["recipe"]["data"] = attack(marker)

    edit_checkpoint(run_copy / CKPT, edit)
    one_line_error(invoke("export", run_copy, "--out", tmp_path / "a.safetensors"), 2, "os:system")
    one_line_error(invoke("export", run_copy / CKPT, "--out", tmp_path / "a.onnx", "--format", "onnx"), 2,
                   "os:system")
    assert not marker.exists() and not (tmp_path / "a.safetensors").exists()
    # with the user's recipe, or trusting the recorded one's module, export works
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    result = invoke("export", run_copy, "--out", tmp_path / "a.safetensors", "--recipe", recipe)
    assert result.exit_code == 0, result.output
    assert not marker.exists()


def test_export_trusts_what_the_user_trusts(run_copy: Path, tmp_path: Path) -> None:
    one_line_error(invoke("export", run_copy, "--out", tmp_path / "a.safetensors"), 2, "'helpers:tiny'",
                   "--trust-factory")
    result = invoke("export", run_copy, "--out", tmp_path / "a.safetensors", "--trust-factory", "helpers")
    assert result.exit_code == 0, result.output


def test_resume_ignores_a_factory_recorded_in_the_checkpoint(finished: Path, tmp_path: Path) -> None:
    """``run --resume`` builds the model from the user's recipe (whose hash the checkpoint must
    match), never from the checkpoint's records."""
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    with pytest.raises(Interrupted):  # a mid-stage checkpoint to resume from
        squeezer.run(parse_recipe(RECIPE), out=out, sink=_interrupt_after_first_epoch_of(1))
    edit_checkpoint(out / CKPT, lambda meta: meta["records"].update(model_factory=attack(marker)))
    result = squeezer.run(parse_recipe(RECIPE), out=out, resume=True)
    assert not marker.exists()
    done = squeezer.load(finished / "model.safetensors", trust=["helpers"])
    again = squeezer.load(result.artifact, trust=["helpers"])
    for (name, a), (_, b) in zip(done.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def _interrupt_after_first_epoch_of(stage: int) -> Any:
    import os
    import signal

    from squeezer.pipeline.events import EpochEnded

    def sink(event: Any) -> None:
        if isinstance(event, EpochEnded) and event.stage == stage and event.epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)  # the graceful stop: a checkpoint, then Interrupted

    return sink


# --- factories in the user's own recipe (items 8 and 11) ---------------------------------------


def test_a_factory_calling_sys_exit_is_an_error_not_a_success(tmp_path: Path) -> None:
    recipe = tmp_path / "exits.toml"
    recipe.write_text(RECIPE.replace("helpers:tiny", "helpers:exits"))
    with pytest.raises(ConfigError, match=r"model: factory 'helpers:exits' called sys.exit\(0\)"):
        squeezer.run(recipe, out=tmp_path / "a")
    one_line_error(invoke("run", recipe, "--out", tmp_path / "b"), 2, "sys.exit(0)", "helpers:exits")


def test_a_distill_student_that_is_not_a_module(tmp_path: Path) -> None:
    recipe = RECIPE + '[[stages]]\ntype = "distill"\nepochs = 1\nstudent = { factory = "helpers:not_a_module" }\n'
    with pytest.raises(ConfigError, match=r"stages\[2\]\.student\.factory: 'helpers:not_a_module' returned str"):
        squeezer.run(parse_recipe(recipe), out=tmp_path / "a")
