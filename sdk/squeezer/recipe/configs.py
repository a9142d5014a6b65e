"""The recipe schema: frozen attrs configs, one class per section and per stage type.

Field ``metadata["help"]`` is the reference text shown by ``squeezer recipe schema``. Strategy
options (importance, scheduler, quantizer, distillation loss) are validated by the plugin's own
config class when the recipe is loaded against a registry.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import attrs

from squeezer.compress.overrides import check_pattern
from squeezer.compress.targets import Targets

_positive = attrs.validators.gt(0.0)
_fraction = [attrs.validators.ge(0.0), attrs.validators.le(1.0)]
_epochs = attrs.validators.ge(0)
_steps = attrs.validators.optional(attrs.validators.ge(0))
_share = attrs.validators.optional(_fraction)


_IMPORT_PATH = re.compile(r"^[\w.]+:[\w.]+$")


def _import_path(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not _IMPORT_PATH.fullmatch(value):
        raise ValueError(f"'{attribute.name}' expected 'module:function' (e.g. 'mymodel:make_model'), got {value!r}")


def _help(text: str, **kwargs: Any) -> Any:
    return attrs.field(metadata={"help": text}, **kwargs)


def _plugin(extension: str, text: str, **kwargs: Any) -> Any:
    """A stage field naming a strategy of ``extension`` (a registry kind); the loader checks every
    such field against the registry (:func:`plugin_fields`)."""
    return attrs.field(metadata={"help": text, "extension": extension}, **kwargs)


def plugin_fields(stage: Any) -> list[tuple[str, str, Any]]:
    """``(field name, extension, value)`` of every strategy ``stage`` names (``None`` values left out)."""
    out = []
    for field in attrs.fields(type(stage)):
        extension = field.metadata.get("extension")
        value = getattr(stage, field.name)
        if extension is not None and value is not None:
            out.append((field.name, extension, value))
    return out


@attrs.frozen(kw_only=True)
class Strategy:
    """A plugin choice: the registered ``name`` and its options (validated by the plugin)."""

    name: str = _help("registered strategy name")
    options: dict[str, Any] = _help("the strategy's options", factory=dict)


#: the task of a recipe that names none
DEFAULT_TASK = "classification"


def _selector(instance: Any, attribute: Any, value: Any) -> None:
    check_pattern(value)


@attrs.frozen(kw_only=True)
class QuantizerOverride:
    """Per-layer quantizer settings: the first override whose pattern matches a weight wins."""

    pattern: str = _help("glob on parameter paths, or '@first', '@last' (the first/last compressed weight) or "
                         "'@depthwise' (depthwise convolutions)", validator=_selector)
    options: dict[str, Any] = _help("quantizer options replacing the stage's (e.g. bits = 8)", factory=dict)
    skip: bool = _help("leave matching weights unquantized", default=False)


@attrs.frozen(kw_only=True)
class QuantizerChoice:
    """A quantizer with optional per-layer overrides."""

    name: str = _help("registered quantizer name")
    options: dict[str, Any] = _help("the quantizer's options", factory=dict)
    overrides: tuple[QuantizerOverride, ...] = _help("per-layer overrides, first match wins", default=())


def _activation_bits(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8):
        raise ValueError(f"'{attribute.name}' must be in 2..8, got {value!r}")


@attrs.frozen(kw_only=True)
class ActivationOverride:
    """Per-layer activation settings: the first override whose pattern matches a layer wins."""

    pattern: str = _help("glob on module names of compressed layers, or '@first', '@last' (the first/last) or "
                         "'@depthwise' (depthwise convolutions)", validator=_selector)
    bits: int | None = _help("bit width of this layer's input (default: the table's)", default=None,
                             validator=_activation_bits)
    signed: bool | None = _help("force a signed (true) or unsigned (false) grid (default: from calibration)",
                                default=None)
    skip: bool = _help("leave this layer's input in full precision", default=False)


@attrs.frozen(kw_only=True)
class Activations:
    """LSQ activation quantization of the compressed layers' inputs: one learned step per input tensor,
    calibrated on training batches when attached (unsigned when every calibration input is >= 0, e.g.
    after a ReLU; signed otherwise), then trained with the weights."""

    bits: int = _help("bit width of the inputs, 2..8 (8 with 8-bit weights: integer kernels in onnxruntime)",
                      default=8, validator=_activation_bits)
    calibration_batches: int = _help("training batches the steps are initialized from (2 * mean|x| / sqrt(Qp))",
                                     default=4, validator=attrs.validators.ge(1))
    log_step: bool = _help(
        "learn log(step): every update relative, so a step cannot cross zero (false: the paper's LSQ)",
        default=True)
    overrides: tuple[ActivationOverride, ...] = _help("per-layer overrides, first match wins", default=())


@attrs.frozen(kw_only=True)
class Optim:
    """Optimizer settings; each stage may override them."""

    optimizer: str = _help("'adam', 'adamw' or 'sgd'", default="adam",
                           validator=attrs.validators.in_(("adam", "adamw", "sgd")))
    lr: float = _help("learning rate", default=1e-3, validator=_positive)
    weight_decay: float = _help("weight decay", default=0.0, validator=attrs.validators.ge(0.0))
    momentum: float = _help("SGD momentum", default=0.9, validator=_fraction)
    lr_schedule: str = _help("'cosine' (per stage) or 'constant'", default="cosine",
                             validator=attrs.validators.in_(("cosine", "constant")))
    quantizer_lr_scale: float = _help(
        "learning-rate multiplier for quantizer parameters (LSQ step sizes), which get no weight decay",
        default=1.0, validator=_positive)


@attrs.frozen(kw_only=True)
class Factory:
    """An import path ``pkg.module:function`` and keyword arguments for it."""

    factory: str = _help("import path 'pkg.module:function'", validator=_import_path)
    options: dict[str, Any] = _help("keyword arguments passed to the factory", factory=dict)


@attrs.frozen(kw_only=True)
class Stage:
    """Fields shared by every stage."""

    TYPE: ClassVar[str] = ""
    name: str = _help("display name (defaults to the type)", default="")
    epochs: int = _help("training epochs", default=1, validator=_epochs)
    steps: int | None = _help(
        "the stage's length in optimizer steps instead of epochs (squeezer runs whole epochs: the nearest "
        "number, at least one, reported when the run starts)", default=None, validator=_steps)
    share: float | None = _help(
        "the stage's length as a fraction of [budget] instead of epochs (the shares of all stages sum to 1)",
        default=None, validator=_share)
    optim: Optim | None = _help("optimizer settings overriding [training]", default=None)

    @property
    def label(self) -> str:
        return self.name or self.TYPE

    def total_epochs(self) -> int:
        return self.epochs

    def __attrs_post_init__(self) -> None:
        _one_unit(self, ("steps", "share"))


def _one_unit(stage: Any, names: tuple[str, ...]) -> None:
    """At most one of the (optional) length fields ``names`` is set."""
    given = [n for n in names if getattr(stage, n) is not None]
    if len(given) > 1:
        raise ValueError(f"'{given[1]}' gives the length again: set one of {', '.join(names)}, not both")


@attrs.frozen(kw_only=True)
class TrainStage(Stage):
    """Train the model as it is (dense from scratch, or fine-tune a compressed one)."""

    TYPE: ClassVar[str] = "train"


def _no_epochs(instance: Any, attribute: Any, value: int) -> None:
    if value != 0:
        raise ValueError("'epochs' is not used by a prune stage: it trains epochs_per_round epochs after "
                         "each pruning round (the scheduler's rounds), so set epochs_per_round")


def _no_steps(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None:
        raise ValueError("'steps' is not used by a prune stage: it trains steps_per_round steps after each "
                         "pruning round, so set steps_per_round (or share, for the whole stage)")


@attrs.frozen(kw_only=True)
class PruneStage(Stage):
    """Iterative pruning: per round, prune to the scheduled sparsity, then train (QAT if a quantizer is set)."""

    TYPE: ClassVar[str] = "prune"
    importance: Strategy = _plugin("importance", "importance criterion (default LAMP: keeps small layers alive)",
                                   factory=lambda: Strategy(name="lamp"))
    scheduler: Strategy = _plugin("scheduler", "sparsity scheduler (its target is the final sparsity)")
    quantizer: QuantizerChoice | None = _plugin("quantizer", "quantizer for QAT between rounds (none: prune only)",
                                                default=None)
    activations: Activations | None = _help(
        "quantize the compressed layers' inputs (e.g. { bits = 8 }), attached after the first round", default=None)
    scope: str = _help("'global' (rank all weights together) or 'layer'", default="global",
                       validator=attrs.validators.in_(("global", "layer")))
    min_density: float = _help(
        "fraction every layer keeps under global pruning (and always one weight); keep it well below "
        "1 - target, or every layer ends at exactly this density", default=0.005, validator=_fraction)
    keep_rows: bool = _help(
        "every row of a compressed weight (output channel, unit, class) keeps its best weight, so no round "
        "empties one (false: rows compete like any other weights)", default=True,
        validator=attrs.validators.instance_of(bool))
    epochs_per_round: int = _help("training epochs after each pruning round", default=2, validator=_epochs)
    steps_per_round: int | None = _help(
        "optimizer steps after each pruning round instead of epochs_per_round (rounded to whole epochs, at "
        "least one, when the run starts); with share instead, the stage's share is spread evenly over its "
        "rounds", default=None, validator=_steps)
    steps: int | None = attrs.field(default=None, validator=_no_steps, metadata={
        "help": "not used by a prune stage (see steps_per_round)", "hidden": True})
    calibration_batches: int = _help("batches for gradient-based importance", default=8,
                                     validator=attrs.validators.ge(1))
    epochs: int = attrs.field(default=0, validator=_no_epochs, metadata={
        "help": "not used by a prune stage (see epochs_per_round)", "hidden": True})

    def total_epochs(self) -> int:  # rounds are known only with the registry; see pipeline
        return self.epochs_per_round


@attrs.frozen(kw_only=True)
class QuantizeStage(Stage):
    """Quantization-aware training without pruning: attach quantizers, then train."""

    TYPE: ClassVar[str] = "quantize"
    quantizer: QuantizerChoice = _plugin("quantizer", "the quantizer")
    activations: Activations | None = _help(
        "quantize the compressed layers' inputs (e.g. { bits = 8 }), attached with the quantizers", default=None)


#: when Phase 2's student distills: on every batch (Deep Mutual Learning, the paper), or only on
#: batches where the self-teacher's task loss is below the student's
STUDENT_DISTILLS = ("always", "when_teacher_leads")


@attrs.frozen(kw_only=True)
class MutualStage(Stage):
    """PQK Phase 2: the pruned, quantized student and its self-teacher (student + unimportant weights)."""

    TYPE: ClassVar[str] = "mutual"
    distillation: Strategy = _plugin("distillation_loss", "distillation loss, applied in both directions",
                                     factory=lambda: Strategy(name="hinton"))
    warmup_epochs: int = _help("epochs of cross-entropy only before mutual KD", default=1, validator=_epochs)
    warmup_steps: int | None = _help("the warm-up in optimizer steps instead of warmup_epochs", default=None,
                                     validator=_steps)
    warmup_share: float | None = _help(
        "the warm-up's share of [budget] (the stage runs warmup_share + share of it, as it runs warmup_epochs + "
        "epochs); required with share, 0 for none", default=None, validator=_share)
    kd_weight: float = _help("weight of the distillation term", default=1.0, validator=attrs.validators.ge(0.0))
    student_distills: str = _help(
        "when the student's distillation term applies: 'always' (mutual learning, the paper) or "
        "'when_teacher_leads' (only on batches where the teacher's task loss is below the student's)",
        default="always", validator=attrs.validators.in_(STUDENT_DISTILLS))
    teacher_quantized: bool = _help(
        "teacher sees important weights quantized, and its inputs through the student's activation quantizers "
        "(else both in full precision)", default=True)
    teacher_owns: tuple[str, ...] = _help(
        "non-masked parameters the teacher gets its own copy of: 'norm' (normalization layers, with "
        "their statistics) and/or 'bias' (biases of compressed layers); the student owns the rest",
        default=("norm",), converter=tuple,
        validator=attrs.validators.deep_iterable(attrs.validators.in_(("norm", "bias"))),
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        _one_unit(self, ("warmup_steps", "warmup_share"))


@attrs.frozen(kw_only=True)
class DistillStage(Stage):
    """Plain KD: a frozen copy of the current model teaches a fresh student."""

    TYPE: ClassVar[str] = "distill"
    distillation: Strategy = _plugin("distillation_loss", "distillation loss", factory=lambda: Strategy(name="hinton"))
    kd_weight: float = _help("weight of the distillation term", default=1.0, validator=attrs.validators.ge(0.0))
    student: Factory | None = _help("student model factory (default: a fresh [model])", default=None)


STAGE_TYPES: dict[str, type[Stage]] = {
    cls.TYPE: cls for cls in (TrainStage, PruneStage, QuantizeStage, MutualStage, DistillStage)
}


#: the recipe format this squeezer reads
RECIPE_VERSION = 1


@attrs.frozen(kw_only=True)
class Budget:
    """The run's total length, split among the stages by their shares: give epochs or steps."""

    epochs: int | None = _help("the total in epochs of the training loader (grows with the data)", default=None,
                               validator=attrs.validators.optional(attrs.validators.ge(1)))
    steps: int | None = _help("the total in optimizer steps, one per training batch (whatever the data's size)",
                              default=None,
                              validator=attrs.validators.optional(attrs.validators.ge(1)))

    def __attrs_post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give one of 'epochs' or 'steps' (e.g. [budget] steps = 6000)")


@attrs.frozen(kw_only=True)
class Recipe:
    """A whole compression recipe."""

    model: Factory = _help("the model factory")
    data: Factory = _help("the data factory, returning (train_loader, val_loader)")
    stages: tuple[Stage, ...] = _help("ordered stages")
    targets: Targets = _help("which weights are compressed", factory=Targets)
    training: Optim = _help("default optimizer settings", factory=Optim)
    budget: Budget | None = _help("the run's total length, split by the stages' shares", default=None)
    seed: int = _help("random seed", default=0)
    output_dir: str = _help("where checkpoints and the artifact go", default="squeezer-out")
    device: str = _help("'auto', 'cpu', 'cuda', ...", default="auto")
    version: int = _help("the recipe format version; a recipe of another version is refused", default=RECIPE_VERSION)
    threads: int = _help(
        "CPU threads for torch's intra-op parallelism during the run (torch.set_num_threads); under "
        "torchrun the N processes on a machine share them (each uses max(1, threads // N)). 1: fastest "
        "for small models on a shared machine, and results that do not depend on the core count; 0: "
        "torch's default (one per core, or OMP_NUM_THREADS). squeezer run --threads overrides it",
        default=1, validator=attrs.validators.ge(0))
    sync_batchnorm: bool = _help(
        "under torchrun, convert BatchNorm layers to SyncBatchNorm (CUDA only; no effect in one process)",
        default=False)
    disable_plugins: tuple[str, ...] = _help("plugins not to load for this recipe", default=(), converter=tuple)
    task: Strategy = _plugin("task", "what the run trains and measures: the loss, the metric, where the targets are "
                             "(classification, token_classification, language_model, regression, or a plugin's)",
                             factory=lambda: Strategy(name=DEFAULT_TASK))
    source: str = attrs.field(default="<recipe>", eq=False, metadata={"help": "file the recipe came from"})

    def __attrs_post_init__(self) -> None:
        if not self.stages:
            raise ValueError("'stages' needs at least one stage")
