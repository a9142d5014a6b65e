"""Hook specifications: the five extension points of squeezer.

Each hook receives a :class:`~squeezer.registry.Registry` and registers named strategies on it
(the register-callback pattern of tox and llm), so one plugin can provide several strategies.
Hooks return nothing. Arguments are only ever added, never removed; an implementation may accept
a subset of them.

A strategy is registered as an ``attrs`` class whose fields are its recipe options (validated by
the class's own validators); the core builds it with the options a recipe gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from squeezer.registry import Registry

PROJECT_NAME = "squeezer"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def squeezer_register_importances(registry: Registry) -> None:
    """Register importance criteria with ``registry.add_importance(name, cls)``.

    ``cls`` is an attrs class implementing :class:`squeezer.strategies.Importance`: calling it
    with a weight (and its accumulated gradient when ``needs_gradients`` is true) returns a
    float score of the weight's shape; higher means more important.

    The core checks every score: same shape as the weight, floating dtype, no NaN. A score that
    fails names the plugin and strategy in the error.

    Called once per plugin when the registry is built; all implementations are called.
    Since 0.1.
    """


@hookspec
def squeezer_register_schedulers(registry: Registry) -> None:
    """Register sparsity schedulers with ``registry.add_scheduler(name, cls)``.

    ``cls`` is an attrs class implementing :class:`squeezer.strategies.Scheduler`: its
    ``sparsities()`` returns the target sparsity of each pruning round.

    The core checks the schedule with :func:`squeezer.contracts.schedule` (the conformance kit
    applies the same function): at most 10,000 rounds, every value a finite number in [0, 1],
    non-decreasing, and the last value equal to the scheduler's ``target``. Schedules never revive
    a pruned weight: the core keeps earlier masks whatever a schedule says.

    Called once per plugin when the registry is built; all implementations are called.
    Since 0.1.
    """


@hookspec
def squeezer_register_quantizers(registry: Registry) -> None:
    """Register weight quantizers with ``registry.add_quantizer(name, cls)``.

    ``cls`` is an attrs class implementing :class:`squeezer.strategies.Quantizer`: its
    ``build(weight)`` returns a :class:`torch.nn.Module` that fake-quantizes a tensor of that
    shape (and exposes ``bits`` and ``quantize(w) -> (codes, scale)`` for export).

    The core checks the built module: output shape and dtype equal to the input's, and zero maps
    to exactly zero (so pruned weights stay pruned after quantization); at export,
    :func:`squeezer.contracts.quantizer_codes` (also the conformance kit's check): integer codes
    of the weight's shape, a floating scale broadcasting to it, and ``codes * scale`` (cast to the
    weight's dtype) equal bit for bit to the module's output.

    Called once per plugin when the registry is built; all implementations are called.
    Since 0.1.
    """


@hookspec
def squeezer_register_distillation_losses(registry: Registry) -> None:
    """Register distillation losses with ``registry.add_distillation_loss(name, cls)``.

    ``cls`` is an attrs class implementing :class:`squeezer.strategies.DistillationLoss`: calling
    it with ``(student_logits, teacher_logits)`` returns a scalar loss. The core detaches the
    teacher's logits; in mutual training it calls the loss in both directions.

    The core checks the result: a finite scalar tensor.

    Called once per plugin when the registry is built; all implementations are called.
    Since 0.1.
    """


@hookspec
def squeezer_register_tasks(registry: Registry) -> None:
    """Register tasks with ``registry.add_task(name, cls)``.

    ``cls`` is an attrs class implementing :class:`squeezer.strategies.Task`: what a run trains
    and measures (a recipe's top-level ``task``; the default is ``classification``). Every driver
    (the recipe's stages, ``Compression``, the trainer callbacks) computes its loss with
    ``loss(outputs, targets)``, distils on ``positions(outputs, targets)`` and evaluates with
    ``score`` over the summed ``stats`` of a loader's batches.

    The core checks every result with :mod:`squeezer.contracts` (``task_loss``,
    ``task_positions``, ``task_stats``, ``task_score``; the conformance kit's
    ``check_task`` applies the same functions): the loss a 0-d floating tensor, positions a 2-D
    floating tensor, stats a dict of finite sums with ``loss_sum`` and a non-negative ``count``,
    the score a real number. A ``ValueError`` says the model or data does not fit the task and is
    reported naming the model or data factory; anything else names the plugin.

    Called once per plugin when the registry is built; all implementations are called.
    Since 0.2.
    """
