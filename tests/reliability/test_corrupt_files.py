"""Corrupt checkpoints (and randomly damaged artifacts): refused with ArtifactError, nothing unpickled,
the file left as it was. tests/artifact covers the named artifact cases; this adds checkpoints,
``--resume``/``export`` on them, and random damage to both."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from typer.testing import CliRunner

import squeezer
from squeezer import ArtifactError
from squeezer.cli import app
from squeezer.pipeline import checkpoint
from squeezer.pipeline.loop import CHECKPOINT as CKPT  # checkpoints/last.safetensors
from squeezer.recipe import parse_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import TRAIN_PRUNE_LSQ as RECIPE

DAMAGE = settings(max_examples=settings().max_examples * 2, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run: its last checkpoint (mid prune stage is overwritten by the final one) and artifact."""
    out = tmp_path_factory.mktemp("run") / "out"
    squeezer.run(parse_recipe(RECIPE), out=out)
    return out


@pytest.fixture()
def ckpt_bytes(finished: Path) -> bytes:
    return (finished / CKPT).read_bytes()


def _header(data: bytes) -> tuple[int, dict[str, Any]]:
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8 : 8 + n])


def _rewrite_doc(data: bytes, edit: Any) -> bytes:
    """Re-serialize a checkpoint with its squeezer document passed through ``edit`` (no checksum update)."""
    tensors = st_load(data)
    _, header = _header(data)
    doc = edit(json.loads(header["__metadata__"]["squeezer"]))
    return st_save(tensors, metadata={"squeezer": json.dumps(doc)})


def _refused(path: Path, *needles: str) -> str:
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(ArtifactError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    if before is not None:
        assert path.read_bytes() == before  # refused, not "repaired"
    return message


def test_the_intact_checkpoint_loads(finished: Path) -> None:
    tensors, meta = checkpoint.load(finished / CKPT)
    assert meta["stage"] == 2 and "model.1.parametrizations.weight.original" in tensors


@pytest.mark.parametrize("keep", [0, 7, 8, 9, 100, 0.5, -1])
def test_truncated(tmp_path: Path, ckpt_bytes: bytes, keep: float) -> None:
    n = int(len(ckpt_bytes) * keep) if isinstance(keep, float) else keep % len(ckpt_bytes)
    path = tmp_path / "last.safetensors"
    path.write_bytes(ckpt_bytes[:n])
    _refused(path)


def test_flipped_tensor_byte(tmp_path: Path, ckpt_bytes: bytes) -> None:
    data = bytearray(ckpt_bytes)
    data[-3] ^= 0x01  # one bit of the last tensor: still a valid safetensors file
    path = tmp_path / "last.safetensors"
    path.write_bytes(bytes(data))
    _refused(path, "checksum mismatch")


def test_edited_metadata(tmp_path: Path, ckpt_bytes: bytes) -> None:
    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        doc["meta"]["stage"] = 0  # "resume from the start of stage 0 with these weights"
        return doc

    path = tmp_path / "last.safetensors"
    path.write_bytes(_rewrite_doc(ckpt_bytes, edit))
    _refused(path, "checksum mismatch")


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: {**d, "version": 99}, "checkpoint version 99 is not supported (this squeezer reads 2)"),
    (lambda d: {**d, "version": 1}, "checkpoint version 1 is not supported"),
    (lambda d: {**d, "version": "2"}, "checkpoint version '2' is not supported"),
    (lambda d: {**d, "format": "squeezer-artifact"}, "not a squeezer checkpoint (format 'squeezer-artifact')"),
    (lambda d: [d], "not a squeezer checkpoint (format None)"),
    (lambda d: {k: v for k, v in d.items() if k != "sha256"}, "without 'meta' or 'sha256'"),
    (lambda d: {**d, "meta": "x"}, "without 'meta' or 'sha256'"),
])
def test_wrong_version_format_or_document(tmp_path: Path, ckpt_bytes: bytes, edit: Any, needle: str) -> None:
    path = tmp_path / "last.safetensors"
    path.write_bytes(_rewrite_doc(ckpt_bytes, edit))
    _refused(path, needle)


def test_not_json_and_no_metadata(tmp_path: Path) -> None:
    path = tmp_path / "last.safetensors"
    path.write_bytes(st_save({"x": torch.zeros(2)}, metadata={"squeezer": "{not json"}))
    _refused(path, "not a squeezer checkpoint or corrupt")
    path.write_bytes(st_save({"x": torch.zeros(2)}))
    _refused(path, "not a squeezer checkpoint or corrupt")


def test_an_artifact_is_not_a_checkpoint(finished: Path) -> None:
    _refused(finished / "model.safetensors", "not a squeezer checkpoint")


class _SideEffect:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_disguised_as_a_checkpoint_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    assert not marker.exists()
    for name, write in [
        ("pickle", lambda p: p.write_bytes(pickle.dumps({"model": _SideEffect(marker)}))),
        ("torch-zip", lambda p: torch.save({"model": _SideEffect(marker)}, p)),
    ]:
        path = tmp_path / name / "last.safetensors"
        path.parent.mkdir()
        write(path)
        _refused(path)
        assert not marker.exists(), name
        result = CliRunner().invoke(app, ["export", str(path), "--out", str(tmp_path / "x.safetensors")])
        assert result.exit_code == 2 and not marker.exists(), result.output
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_directory_and_unreadable(tmp_path: Path) -> None:
    _refused(tmp_path / "nope.safetensors", "cannot read checkpoint")
    _refused(tmp_path, "cannot read checkpoint")


@DAMAGE
@given(st.data())
def test_random_damage_is_refused_or_harmless(ckpt_bytes: bytes, tmp_path_factory: pytest.TempPathFactory,
                                              data: st.DataObject) -> None:
    """Any flipped bytes / cut tail: ArtifactError, or (a byte JSON ignores) exactly the original content."""
    damaged = bytearray(ckpt_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(damaged) - 1))
        damaged[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
    path = tmp_path_factory.mktemp("damage") / "last.safetensors"
    path.write_bytes(bytes(damaged))
    try:
        tensors, meta = checkpoint.load(path)
    except ArtifactError as exc:
        assert "\n" not in str(exc)
        return
    good_tensors, good_meta = st_load(ckpt_bytes), json.loads(_header(ckpt_bytes)[1]["__metadata__"]["squeezer"])
    assert meta == good_meta["meta"]
    assert tensors.keys() == good_tensors.keys()
    assert all(torch.equal(tensors[k], good_tensors[k]) for k in tensors)


@DAMAGE
@given(st.data())
def test_random_damage_to_an_artifact(finished: Path, tmp_path_factory: pytest.TempPathFactory,
                                      data: st.DataObject) -> None:
    good = (finished / "model.safetensors").read_bytes()
    damaged = bytearray(good)
    i = data.draw(st.integers(0, len(damaged) - 1))
    damaged[i] ^= data.draw(st.integers(1, 255))
    path = tmp_path_factory.mktemp("damage") / "model.safetensors"
    path.write_bytes(bytes(damaged))
    try:
        squeezer.inspect(path)
        model = squeezer.load(path, __import__("helpers").tiny())
    except ArtifactError as exc:
        assert "\n" not in str(exc)
        return
    reference = squeezer.load(finished / "model.safetensors", __import__("helpers").tiny())
    for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


# --- resume and export on a corrupt checkpoint, through the API and the CLI ------------------------


@pytest.fixture()
def corrupt_run(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    (out / "model.safetensors").unlink()  # as if killed before the export
    data = bytearray((out / CKPT).read_bytes())
    data[-3] ^= 0x10
    (out / CKPT).write_bytes(bytes(data))
    return out


def test_resume_refuses_a_corrupt_checkpoint_and_leaves_it(corrupt_run: Path) -> None:
    before = (corrupt_run / CKPT).read_bytes()
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        squeezer.run(parse_recipe(RECIPE), out=corrupt_run, resume=True)
    assert (corrupt_run / CKPT).read_bytes() == before
    assert not (corrupt_run / "model.safetensors").exists()


def test_cli_resume_and_export_refuse_a_corrupt_checkpoint(corrupt_run: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    before = (corrupt_run / CKPT).read_bytes()
    runner = CliRunner()
    for args in (["run", recipe, "--out", corrupt_run, "--resume", "--quiet"],
                 ["export", corrupt_run, "--out", tmp_path / "exported.safetensors"]):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {corrupt_run / CKPT}"), result.stderr
        assert "checksum mismatch" in lines[0]
    assert (corrupt_run / CKPT).read_bytes() == before
    assert not (corrupt_run / "model.safetensors").exists() and not (tmp_path / "exported.safetensors").exists()
