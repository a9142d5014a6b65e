"""The run summary says what the output runs like: a dense model, or an integer ONNX export."""

from __future__ import annotations

from io import StringIO
from typing import Any

from rich.console import Console

from squeezer.cli.summary import print_summary


def _data(activation_bytes: int) -> dict[str, Any]:
    sizes = {"dense_fp32_bytes": 1000, "torch_save_bytes": 1200, "artifact_bytes": 100, "information_bound_bytes": 90}
    return {"output_dir": "runs/[x]", "artifact": "runs/[x]/model.safetensors", "metric": "accuracy",
            "dense_accuracy": 0.99, "accuracy": 0.98, "sparsity": 0.9, "stage_accuracy": {}, "layers": [],
            "sizes": sizes, "artifact_report": {"activation_bytes": activation_bytes}}


def _printed(data: dict[str, Any]) -> str:
    out = StringIO()
    print_summary(Console(file=out, width=200), data)
    return out.getvalue()


def test_weights_only_says_smaller_not_faster() -> None:
    text = _printed(_data(0))
    assert "expect a smaller file, not a faster model" in text and "integer" not in text


def test_quantized_inputs_point_to_the_integer_export_with_the_run_directory() -> None:
    text = _printed(_data(20))
    assert "squeezer export runs/[x] --format onnx" in text  # the user's path, not read as markup
    assert "integer model" in text and "not a faster model" not in text


def test_a_mutual_stage_shows_its_regime_and_what_the_suite_measured() -> None:
    data = {**_data(0), "stage_accuracy": {"dense": 0.99, "phase1": 0.95, "phase2": 0.96},
            "teacher_accuracy": {"phase2": 0.935}}
    text = " ".join(_printed(data).split())
    expected = ("phase2 (mutual distillation): student 95.0% after phase1 -> 96.0%; "
                "its self-teacher 93.5%, 2.5 points behind.")
    assert expected in text
    assert "level with the same epochs of plain fine-tuning" in text and "recipes/phase1.toml" in text


def test_no_mutual_stage_no_phase2_line() -> None:
    assert "mutual distillation" not in _printed({**_data(0), "stage_accuracy": {"dense": 0.99}})
