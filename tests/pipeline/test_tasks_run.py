"""Tasks end to end: the whole PQK recipe (dense, pruning rounds with LSQ, Phase 2) on a language
model and on a regression model, each chosen by the recipe's ``task``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import squeezer
from squeezer.errors import ConfigError
from squeezer.pipeline.runner import run
from squeezer.pipeline.training import evaluate
from squeezer.recipe.loader import parse_recipe

HERE = Path(__file__).resolve().parent

RECIPE = """
seed = 0
task = {task}
[model]
factory = "task_models:{model}"
[data]
factory = "task_models:{data}"
[training]
lr = 0.01
[targets]
types = ["Linear", "Embedding", "GRU"]
[[stages]]
type = "train"
epochs = 3
[[stages]]
type = "prune"
scheduler = {{ name = "geometric", target = 0.5, rounds = 2 }}
quantizer = {{ name = "lsq", bits = 8 }}
epochs_per_round = 1
[[stages]]
type = "mutual"
distillation = "{kd}"
warmup_epochs = 1
epochs = 1
"""


@pytest.fixture(autouse=True)
def _factories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))


def _run(tmp_path: Path, **fields: str) -> squeezer.RunResult:
    registry = squeezer.load_registry()
    recipe = parse_recipe(RECIPE.format(**fields), registry=registry)
    return run(recipe, out=tmp_path / "out", registry=registry)


def test_language_model_trains_on_shifted_tokens_and_reports_perplexity(tmp_path: Path) -> None:
    import task_models

    result = _run(tmp_path, task='"language_model"', model="make_lm", data="make_lm_loaders", kd="hinton")
    assert result.metric == "perplexity"
    assert result.dense_accuracy is not None and result.dense_accuracy < 3.0  # chance: 12 (the vocabulary)
    assert 1.0 <= result.accuracy < 4.0
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    # the artifact reloads into a fresh model with the student's perplexity
    assert result.artifact is not None
    loaded = squeezer.load(result.artifact, task_models.make_lm())
    task = squeezer.engine.task.RunTask.create(squeezer.load_registry(), "language_model")
    _, ppl = evaluate(loaded, task_models.make_lm_loaders()[1], torch.device("cpu"), task)
    assert ppl == pytest.approx(result.accuracy, rel=1e-6)


def test_a_hugging_face_gpt2_language_model_compresses_its_tied_head_once(tmp_path: Path) -> None:
    """GPT-2 from a tiny config through the whole recipe: its Conv1D layers are compressed, and the
    lm_head tied to the token embedding once (one mask and quantizer, stored once, tied on reload)."""
    pytest.importorskip("transformers")
    import task_models

    notes: list[str] = []
    registry = squeezer.load_registry()
    text = RECIPE.format(task='"language_model"', model="make_gpt2", data="make_lm_loaders", kd="hinton")
    text = text.replace('types = ["Linear", "Embedding", "GRU"]', 'types = ["Linear", "Conv1D"]')
    result = run(parse_recipe(text, registry=registry), out=tmp_path / "out", registry=registry,
                 sink=lambda e: notes.append(getattr(e, "text", "")))
    assert result.metric == "perplexity" and result.accuracy < 6.0  # chance: 12
    paths = [path for path, *_ in result.layers]
    assert paths[0] == "transformer.wte.weight" and len(paths) == 9
    assert all(".c_" in p for p in paths[1:])  # attention and MLP Conv1D weights
    assert any("transformer.wte.weight is tied to lm_head.weight: compressed once" in n for n in notes), notes
    assert result.artifact is not None
    loaded = squeezer.load(result.artifact, task_models.make_gpt2())
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    _, numel, nonzeros, bits = result.layers[0]
    assert int(loaded.lm_head.weight.count_nonzero()) <= nonzeros < numel and bits == 8  # code 0 is kept too
    task = squeezer.engine.task.RunTask.create(registry, "language_model")
    _, ppl = evaluate(loaded, task_models.make_lm_loaders()[1], torch.device("cpu"), task)
    assert ppl == pytest.approx(result.accuracy, rel=1e-5)


def test_regression_reports_r2(tmp_path: Path) -> None:
    result = _run(tmp_path, task='{ name = "regression", metric = "r2" }', model="make_regressor",
                  data="make_regression_loaders", kd="mse")
    assert result.metric == "r2"
    assert result.dense_accuracy is not None and result.dense_accuracy > 0.8
    assert math.isfinite(result.accuracy) and result.accuracy > 0.7


def test_a_language_model_run_as_classification_names_the_task_to_use(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.factory: 'task_models:make_lm' .*language_model"):
        _run(tmp_path, task='"classification"', model="make_lm", data="make_lm_loaders", kd="hinton")


@pytest.mark.parametrize("nth", [3, 5])  # mid Phase 1 (between rounds), mid Phase 2 (after the warm-up)
def test_a_tied_gpt2_resumed_ends_with_the_uninterrupted_artifact(tmp_path: Path, nth: int) -> None:
    """Checkpoints record the tie (the spec's aliases) and a resumed run rebuilds it on a fresh model."""
    pytest.importorskip("transformers")
    from tests.pipeline.test_resume import Crash, _crash_at

    from squeezer.pipeline.events import Checkpointed

    text = RECIPE.format(task='"language_model"', model="make_gpt2", data="make_lm_loaders", kd="hinton")
    recipe = parse_recipe(text.replace('types = ["Linear", "Embedding", "GRU"]', 'types = ["Linear", "Conv1D"]'))
    full = run(recipe, out=tmp_path / "full")
    with pytest.raises(Crash):
        run(recipe, out=tmp_path / "cut", sink=_crash_at(Checkpointed, nth))
    resumed = run(recipe, out=tmp_path / "cut", resume=True)
    artifact = "model.safetensors"
    assert (tmp_path / "cut" / artifact).read_bytes() == (tmp_path / "full" / artifact).read_bytes()
    assert resumed.accuracy == full.accuracy


def test_a_loader_with_its_own_generator_is_warned_about(tmp_path: Path) -> None:
    """Its shuffling order is not in the checkpoint (torch's global RNG is), so resumes are not exact."""
    from squeezer.pipeline.events import Note

    notes: list[Note] = []
    text = RECIPE.format(task='"regression"', model="make_regressor", data="make_regression_loaders", kd="mse")
    recipe = parse_recipe(text.replace('types = ["Linear", "Embedding", "GRU"]', 'types = ["Linear"]'))
    run(recipe, out=tmp_path / "out", sink=lambda e: notes.append(e) if isinstance(e, Note) else None)
    warned = [n for n in notes if "its own torch.Generator" in n.text]
    assert len(warned) == 1 and warned[0].level == "warning" and "make_regression_loaders" in warned[0].text
