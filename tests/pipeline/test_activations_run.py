"""Activation quantization from a recipe, end to end: ``squeezer run`` on the digits example with
8-bit weights and activations, then the artifact (its record, its size against the bound, exact
reload), ``squeezer eval`` and ``squeezer export --format onnx`` (integer kernels in onnxruntime)."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import squeezer
from squeezer.artifact import inspect
from squeezer.artifact.reader import read
from squeezer.cli import app
from squeezer.engine.activations import activation_quantizers
from squeezer.examples.digits import make_model

pytest.importorskip("squeezer_lsq")

RECIPE = """\
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
epochs = 2
[[stages]]
type = "prune"
scheduler = { name = "one_shot", target = 0.5 }
quantizer = { name = "lsq", bits = 8 }
activations = { bits = 8, calibration_batches = 2 }
epochs_per_round = 1
[[stages]]
type = "mutual"
warmup_epochs = 1
epochs = 1
"""
runner = CliRunner()


def invoke(*args: Any) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("acts")
    recipe = root / "int8.toml"
    recipe.write_text(textwrap.dedent(RECIPE), encoding="utf-8")
    invoke("run", recipe, "--out", root / "out", "--quiet")
    return root / "out"


def test_the_artifact_records_the_activation_steps_and_reloads_the_student_exactly(run_dir: Path) -> None:
    artifact = run_dir / "model.safetensors"
    acts = read(artifact).meta["activations"]
    assert [(a["module"], a["bits"], a["signed"]) for a in acts] == [
        ("0", 8, False), ("3", 8, False), ("7", 8, False), ("12", 8, False), ("14", 8, False)]  # pixels >= 0, ReLUs
    report = inspect(artifact)
    assert report.activation_bytes == 4 * len(acts)
    assert report.payload_bytes - report.activation_bytes == sum(layer.bytes for layer in report.layers) + \
        report.state_bytes  # the steps are all the activations add to the payload (their grids are in the record)
    # the student as training left it: the run's final checkpoint, rebuilt with its quantizers
    from squeezer.cli.artifact import model_from_checkpoint

    student = model_from_checkpoint(run_dir / "checkpoints" / "last.safetensors").model
    assert len(activation_quantizers(student)) == 5
    # training learned log(step) (the default); the artifact stores the step, and a load rebuilds plain steps
    assert all(q.log_step is not None for q in activation_quantizers(student).values())
    loaded = squeezer.load(artifact, make_model(width=8))
    assert {n: (q.bits, q.signed) for n, q in activation_quantizers(loaded).items()} == {
        a["module"]: (a["bits"], a["signed"]) for a in acts}
    x = torch.rand(64, 1, 8, 8) * 4
    with torch.no_grad():
        assert torch.equal(loaded(x), student(x))


def test_squeezer_eval_reports_the_runs_accuracy(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else None
    result = json.loads(invoke("eval", run_dir / "model.safetensors", "--json").output)
    assert 0.5 < result["accuracy"] <= 1.0
    if summary is not None and "accuracy" in summary:
        assert result["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-9)


def test_the_onnx_export_runs_integer_kernels(run_dir: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from squeezer.artifact.onnx_verify import session_options

    target = tmp_path / "model.onnx"
    invoke("export", run_dir / "model.safetensors", "--format", "onnx", "--out", target)
    options = session_options(ort)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] == 3 and ops["QGemm"] >= 1 and ops["Conv"] == 0, ops
