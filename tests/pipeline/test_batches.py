"""`squeezer run` on Hugging Face-style models and data: dict batches as keyword arguments, logits
in a dict, an attribute or a tuple; an output without logits is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import squeezer
from squeezer.errors import TrainingError
from squeezer.pipeline.runner import run
from squeezer.pipeline.training import batch_to, logits_of
from squeezer.recipe.loader import parse_recipe

HERE = Path(__file__).resolve().parent

RECIPE = """
seed = 0
[model]
factory = "hf_style:make_model"
output = "{output}"
[data]
factory = "hf_style:make_loaders"
[training]
lr = 0.01
[targets]
types = ["Linear", "Embedding"]
[[stages]]
type = "train"
epochs = 2
[[stages]]
type = "prune"
importance = "l1"
scheduler = {{ name = "geometric", target = 0.5, rounds = 2 }}
quantizer = {{ name = "lsq", bits = 4 }}
epochs_per_round = 1
[[stages]]
type = "mutual"
warmup_epochs = 1
epochs = 1
"""


@pytest.fixture(autouse=True)
def _factories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))


@pytest.mark.parametrize("output", ["dict", "object", "tuple"])
def test_pqk_on_keyword_batches_and_wrapped_logits(output: str, tmp_path: Path) -> None:
    registry = squeezer.load_registry(autoload=False)
    recipe = parse_recipe(RECIPE.format(output=output), registry=registry)
    result = run(recipe, out=tmp_path / "out", registry=registry)
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert {bits for *_, bits in result.layers} == {4}
    assert result.accuracy > 0.6  # chance is 1/3
    assert result.artifact is not None and result.artifact.exists()  # verified against the student on reload


def test_an_output_without_logits_is_one_clear_error(tmp_path: Path) -> None:
    registry = squeezer.load_registry(autoload=False)
    recipe = parse_recipe(RECIPE.format(output="text"), registry=registry)
    with pytest.raises(TrainingError, match="the model returned str; expected logits"):
        run(recipe, out=tmp_path / "out", registry=registry)


def test_batch_shapes() -> None:
    cpu = torch.device("cpu")
    x, y = batch_to({"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3), "labels": torch.ones(2)}, cpu)
    assert set(x) == {"input_ids", "attention_mask"} and y.shape == (2,)
    x, y = batch_to({"x": torch.ones(2, 3), "y": torch.zeros(2), "extra": 1}, cpu)
    assert isinstance(x, torch.Tensor) and x.shape == (2, 3)
    x, y = batch_to((torch.ones(2, 3), torch.zeros(2), torch.ones(2)), cpu)  # extra fields ignored
    assert x.shape == (2, 3)
    with pytest.raises(TypeError, match="targets under one of target, y, labels, label; it has a, b"):
        batch_to({"a": torch.ones(1), "b": torch.ones(1)}, cpu)
    with pytest.raises(TypeError, match="inputs besides its targets"):
        batch_to({"labels": torch.ones(1)}, cpu)
    t = torch.ones(2)
    assert logits_of(t) is t and logits_of({"logits": t}) is t and logits_of((t, None)) is t


def test_squeezer_export_onnx_traces_a_dict_batch_without_its_labels(tmp_path: Path) -> None:
    """The CLI builds the ONNX example from the data factory's batch in whatever form it has (here
    keyword inputs with ``labels``), as the recipe's task splits it."""
    import onnx
    from typer.testing import CliRunner

    from squeezer.cli import app

    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE.format(output="dict"), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "out"), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                                 "--trust-factory", "hf_style:*"])
    assert result.exit_code == 0, result.output
    names = [i.name for i in onnx.load(tmp_path / "m.onnx").graph.input]
    assert names == ["input_ids", "attention_mask"]
