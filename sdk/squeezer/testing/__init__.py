"""Test helpers for squeezer and its plugin authors (also a pytest plugin: ``squeezer.testing.pytest_plugin``).

Importing this package does not import torch or hypothesis; the helpers load on first use.

- Conformance kit (:mod:`squeezer.testing.conformance`): ``check_importance``, ``check_scheduler``,
  ``check_quantizer``, ``check_distillation_loss``, ``check_task``, ``check_strategy``, ``check_registry``, and
  the hypothesis strategies ``weight_tensors``, ``logit_pairs`` and ``task_batches``.
- Toy models (:mod:`squeezer.testing.models`): ``make(name) -> (model, input)``, ``MODEL_NAMES``,
  ``example_input`` and one factory per model.
- pytest fixtures (auto-loaded through the ``pytest11`` entry point): ``squeezer_registry``,
  ``squeezer_plugin_manager``, ``register_plugin``, ``toy_model``, ``cli_runner``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "check_importance": "squeezer.testing.conformance",
    "check_scheduler": "squeezer.testing.conformance",
    "check_quantizer": "squeezer.testing.conformance",
    "check_distillation_loss": "squeezer.testing.conformance",
    "check_strategy": "squeezer.testing.conformance",
    "check_registry": "squeezer.testing.conformance",
    "check_task": "squeezer.testing.conformance",
    "task_batches": "squeezer.testing.conformance",
    "weight_tensors": "squeezer.testing.conformance",
    "logit_pairs": "squeezer.testing.conformance",
    "make_model": "squeezer.testing.models",
    "example_input": "squeezer.testing.models",
    "MODEL_NAMES": "squeezer.testing.models",
}

if TYPE_CHECKING:
    from squeezer.testing.conformance import (
        check_distillation_loss,
        check_importance,
        check_quantizer,
        check_registry,
        check_scheduler,
        check_strategy,
        check_task,
        logit_pairs,
        task_batches,
        weight_tensors,
    )
    from squeezer.testing.models import MODEL_NAMES, example_input
    from squeezer.testing.models import make as make_model


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'squeezer.testing' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    return getattr(module, "make" if name == "make_model" else name)


__all__ = [
    "MODEL_NAMES",
    "check_distillation_loss",
    "check_importance",
    "check_quantizer",
    "check_registry",
    "check_scheduler",
    "check_strategy",
    "check_task",
    "example_input",
    "logit_pairs",
    "make_model",
    "task_batches",
    "weight_tensors",
]
