"""Compression inside your own training loop, without a recipe.

:class:`Compression` puts the state a ``prune`` stage would manage (masks, the sparsity schedule,
quantizers, the optimizer bookkeeping) on a model you train yourself::

    comp = Compression(model, importance="l1", schedule=("geometric", {"target": 0.9, "rounds": 4}),
                       quantizer=("lsq", {"bits": 4}), prune_every=100)
    comp.attach()
    for x, y in loader:                      # PQK Phase 1: prune, then QAT between rounds
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        comp.step(optimizer)                 # a pruning round every `prune_every` steps
    comp.export("model.safetensors")

Phase 2 (mutual learning with the self-teacher) uses :meth:`Compression.self_teacher` and
:meth:`Compression.mutual_loss`; see :meth:`Compression.self_teacher` for the step.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from squeezer import compress
from squeezer.compress.targets import Targets
from squeezer.compress.teacher import SelfTeacher
from squeezer.compress.weight import compressed_weights
from squeezer.engine import (
    Pruner,
    attach_pending_quantizers,
    fresh_state,
    mutual_loss,
    no_decay_on_compressed,
    quantizer_parameters,
)
from squeezer.engine.activations import activation_quantizers, attach_activations
from squeezer.engine.task import RunTask
from squeezer.errors import ConfigError, PluginError, UnknownStrategyError
from squeezer.pipeline.training import forward
from squeezer.recipe.configs import Activations, PruneStage, QuantizerChoice
from squeezer.recipe.loader import check_strategy, checked_schedule
from squeezer.registry import Registry

if TYPE_CHECKING:
    from squeezer.artifact import ArtifactReport

#: a strategy: its registered name, or ``(name, options)``
StrategySpec = str | tuple[str, Mapping[str, Any]]

_MIN_DENSITY = float(attrs.fields(PruneStage).min_density.default or 0.0)  # the prune stage's defaults
_KEEP_ROWS = bool(attrs.fields(PruneStage).keep_rows.default)


def _split(spec: StrategySpec, what: str) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], Mapping):
        return spec[0], dict(spec[1])
    raise ConfigError(f"{what}: expected a name or (name, options), got {spec!r}")


def _quantizer_choice(spec: StrategySpec | QuantizerChoice, registry: Registry) -> QuantizerChoice:
    """The quantizer as a recipe spells it; its options and every override are checked now."""
    if isinstance(spec, QuantizerChoice):
        choice = spec
    else:
        name, options = _split(spec, "quantizer")
        choice = QuantizerChoice(name=name, options=options)
    check_strategy(registry, "quantizer", choice, "quantizer")
    return choice


def _activations(spec: int | Activations | None) -> Activations | None:
    if spec is None or isinstance(spec, Activations):
        return spec
    try:
        return Activations(bits=spec)
    except (TypeError, ValueError):
        raise ConfigError(f"activations: must be bits in 2..8 or an Activations, got {spec!r}") from None


class Compression:
    """Pruning schedule, masks and quantizers on ``model``, driven from your own training loop.

    ``importance``, ``schedule``, ``quantizer`` and ``distillation`` name registered strategies,
    with options as ``(name, {option: value})``; ``quantizer=None`` prunes without quantizing, and
    a :class:`~squeezer.recipe.configs.QuantizerChoice` adds per-layer overrides (as in a recipe).
    ``activations`` (bits, or an :class:`~squeezer.recipe.configs.Activations` with overrides)
    quantizes the compressed layers' inputs with LSQ, as a recipe's ``activations`` does; pass
    :meth:`attach` a few training inputs to calibrate them on.
    ``task`` names what is trained (a registered task: ``classification``, ``language_model``,
    ``regression``); :meth:`mutual_loss` and :meth:`loss` use it. ``scope``, ``min_density`` and
    ``keep_rows`` mean what they mean in a recipe's prune stage (same defaults).
    Round ``r`` runs once :meth:`step` has been called ``prune_start + r * prune_every`` times
    (``prune_start`` defaults to ``prune_every``: train, then prune; ``prune_every=0`` runs every
    round at once). ``registry`` defaults to the installed plugins (:func:`squeezer.load_registry`).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        targets: Targets | None = None,
        importance: StrategySpec = "lamp",
        schedule: StrategySpec = ("geometric", {"target": 0.9, "rounds": 4}),
        quantizer: StrategySpec | QuantizerChoice | None = None,
        activations: int | Activations | None = None,
        distillation: StrategySpec = "hinton",
        task: StrategySpec = "classification",
        scope: str = "global",
        min_density: float = _MIN_DENSITY,
        keep_rows: bool = _KEEP_ROWS,
        prune_every: int = 100,
        prune_start: int | None = None,
        registry: Registry | None = None,
    ) -> None:
        if scope not in ("global", "layer"):
            raise ConfigError(f"scope: must be 'global' or 'layer', got {scope!r}")
        if not 0.0 <= min_density <= 1.0:
            raise ConfigError(f"min_density: must be in [0, 1], got {min_density!r}")
        for field, value in (("prune_every", prune_every), ("prune_start", prune_start)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"{field}: must be a non-negative integer (optimizer steps), got {value!r}")
        if registry is None:
            from squeezer.plugin_manager import load_registry

            registry = load_registry()
        self.model = model
        self.targets = targets or Targets()
        self.registry = registry
        if not isinstance(keep_rows, bool):
            raise ConfigError(f"keep_rows: must be true or false, got {keep_rows!r}")
        self.scope, self.min_density, self.keep_rows = scope, min_density, keep_rows
        self.prune_every = prune_every
        self.prune_start = prune_every if prune_start is None else prune_start
        self.importance_name, options = _split(importance, "importance")
        self.importance = registry.create("importance", self.importance_name, options, where="importance")
        name, options = _split(schedule, "schedule")
        scheduler = registry.create("scheduler", name, options, where="schedule")
        self.schedule: list[float] = checked_schedule(scheduler, f"schedule ({name})")
        self.quantizer: QuantizerChoice | None = None
        if quantizer is not None:
            self.quantizer = _quantizer_choice(quantizer, registry)
        self.activations = _activations(activations)
        self.pruner = Pruner(model=model, registry=registry, importance=self.importance,
                             importance_name=self.importance_name,
                             importance_plugin=registry.get("importance", self.importance_name).plugin,
                             schedule=self.schedule, scope=scope, min_density=min_density, keep_rows=keep_rows,
                             quantizer=self.quantizer)
        self.distillation_name, options = _split(distillation, "distillation")
        self.distillation = registry.create("distillation_loss", self.distillation_name, options,
                                            where="distillation")
        name, options = _split(task, "task")
        self._task: RunTask | UnknownStrategyError
        try:
            self._task = RunTask.create(registry, name, options)
        except UnknownStrategyError as exc:  # a registry without it: fine until a loss is asked for
            self._task = exc
        self.steps = 0

    # --- Phase 1 --------------------------------------------------------------------------
    def attach(self, calibration: Iterable[Any] | None = None) -> compress.Resolution:
        """Put a (dense) mask on every targeted weight, and its quantizer, pending until the first
        pruning round; idempotent. Returns what was targeted.

        With ``activations``, the compressed layers' inputs get LSQ quantizers too, calibrated on
        ``calibration`` (required then: model inputs, e.g. the inputs of a few training batches;
        at most ``calibration_batches`` are used). Build the optimizer after this: every parameter
        compression trains exists now, so nothing joins the optimizer later (an optimizer built
        before still works: the quantizers' parameters join it as a new param group at the first
        round; activation steps it does not know are not trained).
        """
        resolution = compress.attach(self.model, self.targets)
        if self.quantizer is not None:
            attach_pending_quantizers(self.model, self.registry, self.quantizer, "quantizer", on=False)
        if self.activations is not None and not activation_quantizers(self.model):
            if calibration is None:
                raise ConfigError("activations: attach(calibration=...) needs a few training inputs to calibrate "
                                  "the activation steps on")
            inputs = calibration

            def run(n: int) -> Iterable[None]:
                for i, x in enumerate(inputs):
                    if i >= n:
                        return
                    forward(self.model, x)
                    yield None

            attach_activations(self.model, self.activations, run, "activations")
        return resolution

    @property
    def rounds_done(self) -> int:
        """How many scheduled pruning rounds have run."""
        return self.pruner.rounds_done

    @rounds_done.setter
    def rounds_done(self, value: int) -> None:  # a resumed callback restores its counters
        self.pruner.rounds_done = value

    @property
    def done(self) -> bool:
        """True once every scheduled pruning round has run."""
        return self.pruner.done

    @property
    def next_round_at(self) -> int | None:
        """The :meth:`step` count at which the next pruning round runs (``None`` when done)."""
        return None if self.done else self.prune_start + self.rounds_done * self.prune_every

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> list[compress.LayerSparsity] | None:
        """Count one training step and run the pruning rounds now due (:meth:`prune_due`).

        Call it after ``optimizer.step()``. Returns the last round's per-layer sparsity when it pruned.
        """
        self.steps += 1
        return self.prune_due(optimizer)

    def prune_due(self, optimizer: torch.optim.Optimizer | None = None) -> list[compress.LayerSparsity] | None:
        """Run the rounds due at the current step count without counting a step: call it once
        before training when ``prune_start`` is 0 (a recipe's prune stage prunes before it trains)."""
        layers = None
        while (due := self.next_round_at) is not None and self.steps >= due:
            layers = self.prune_round(optimizer)
        return layers

    def prune_round(
        self, optimizer: torch.optim.Optimizer | None = None, gradients: Mapping[str, torch.Tensor] | None = None
    ) -> list[compress.LayerSparsity]:
        """Prune to the next scheduled sparsity; pruned weights stay pruned.

        With ``optimizer``: its state (momentum, Adam moments) at newly pruned entries is zeroed,
        the stored weights and quantizer parameters leave its weight decay, and quantizer
        parameters it lacks (it was built before :meth:`attach`) join it as a new param group.
        Quantizers are switched on by the first round, so they start from the pruned weights.

        A gradient-based importance (``needs_gradients``) gets ``gradients`` by parameter path,
        or else the ``.grad`` your last ``backward()`` left on each weight.
        """
        if not any(True for _ in compressed_weights(self.model)):
            self.attach()
        if self.done:
            raise ConfigError(f"all {len(self.schedule)} scheduled pruning rounds have run")
        if self.pruner.needs_gradients and gradients is None:
            gradients = self._current_gradients()
        layers, _ = self.pruner.round(optimizer, gradients)
        if optimizer is not None:
            self.link_optimizer(optimizer)
        return layers

    def link_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Give ``optimizer`` what a pruning round asks of it (:meth:`prune_round` does this when
        it gets the optimizer): the quantizers' parameters it lacks, as a new param group, and no
        weight decay on the stored weights (their pruned entries hold the unimportant weights)
        or the quantizers' parameters. Idempotent."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [p for p in quantizer_parameters(self.model) if id(p) not in held]
        if missing:
            optimizer.add_param_group({"params": missing, "weight_decay": 0.0})
        no_decay_on_compressed(self.model, optimizer)

    def _current_gradients(self) -> dict[str, torch.Tensor]:
        grads: dict[str, torch.Tensor] = {}
        for path, _ in compressed_weights(self.model):
            g = compress.original(self.model, path).grad
            if g is None:
                raise PluginError(
                    f"importance {self.importance_name!r} needs gradients: call prune_round() after "
                    f"loss.backward() (before zero_grad), or pass gradients=; {path} has none"
                )
            grads[path] = g.detach().clone()
        return grads

    @property
    def task(self) -> RunTask:
        """What is trained and measured (the ``task`` strategy)."""
        if isinstance(self._task, UnknownStrategyError):
            raise self._task
        return self._task

    # --- Phase 2 --------------------------------------------------------------------------
    def self_teacher(
        self, optimizer: torch.optim.Optimizer | None = None, *, owns: Iterable[str] = ("norm",),
        quantized: bool = True,
    ) -> SelfTeacher:
        """The PQK self-teacher: the student's storage plus its pruned-away (unimportant) weights.

        Masks are frozen from here on. The student owns the kept entries of every compressed
        weight (and its quantizer steps), the teacher the pruned entries; the teacher also has
        private copies of ``owns`` (``"norm"``, ``"bias"``); without ``"norm"`` it shares the
        student's normalization layers, whose running statistics its forward leaves to the
        student. With ``optimizer``, those copies join
        it as a new param group, and its state for the model's parameters is forgotten (the recipe
        runner starts Phase 2 with a new optimizer; a step count left from Phase 1 would make
        Adam's first updates of the unimportant weights about 3x the learning rate). One mutual
        step sums both losses into one backward; the views
        route each gradient to the entries its network owns::

            s, t = model(x), teacher(x)
            loss = comp.mutual_loss(s, t, y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()

        Use no weight decay on the stored weights in Phase 2: decay would move entries a step
        does not own.
        """
        teacher = SelfTeacher(self.model, owns, quantized)
        device = next((p.device for p in self.model.parameters()), None)
        if device is not None:
            teacher.to(device)
        params = [p for p in teacher.parameters() if p.requires_grad]
        if optimizer is not None:
            fresh_state(optimizer, self.model.parameters())  # Phase 2 starts afresh, as in the pipeline
            if params:
                optimizer.add_param_group({"params": params})
        return teacher

    def mutual_loss(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
        kd_weight: float = 1.0, student_distills: str = "always",
    ) -> torch.Tensor:
        """Deep-mutual-learning loss of one batch: each network's task loss (cross-entropy for
        classification) plus ``kd_weight`` times the distillation loss towards the other's detached
        outputs (as the ``mutual`` stage, :func:`squeezer.engine.mutual_loss`, which also says what
        ``student_distills = "when_teacher_leads"`` does)."""
        return mutual_loss(student_logits, teacher_logits, targets, self.distillation, kd_weight, task=self.task,
                           student_distills=student_distills)[0]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task's training loss of a batch (cross-entropy for classification), as the recipe
        runner's stages compute it."""
        return self.task.loss(outputs, targets)

    # --- results --------------------------------------------------------------------------
    @property
    def sparsity(self) -> float:
        """Fraction of the compressed weights that are pruned."""
        return compress.sparsity(self.model)

    @property
    def bits(self) -> dict[str, int]:
        """Bit width per quantized weight, by parameter path."""
        return {path: int(getattr(p.quantizer, "bits", 32))
                for path, p in compressed_weights(self.model) if p.quantizer is not None}

    def export(self, path: str | os.PathLike[str], *, info: Mapping[str, Any] | None = None) -> ArtifactReport:
        """Write the student ``Q(W ⊙ M)`` as an artifact (see :func:`squeezer.export`).

        Load it into a fresh instance of the architecture with :func:`squeezer.load`; a
        ``"model_factory"`` in ``info`` lets ``squeezer.load(path)`` build the model itself.
        """
        from squeezer.artifact import export

        return export(self.model, path, info=info)
