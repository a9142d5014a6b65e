"""Rendering the pipeline's events: a rich live display on a terminal, plain lines otherwise.

The core emits events (:mod:`squeezer.pipeline.events`) to a sink and never renders them; a
:class:`ProgressRenderer` is such a sink. Events are matched by class name so that this module
(imported for ``--help``) does not import the pipeline, and with it torch.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def percent(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


class FieldColumn(ProgressColumn):
    """One named value of a task's ``fields``, formatted (``-`` until it is known)."""

    def __init__(self, field: str, label: str = "", style: str = "", width: int | None = None) -> None:
        super().__init__()
        self.field, self.label, self.style, self.width = field, label, style, width

    def render(self, task: Task) -> Text:
        value = task.fields.get(self.field)
        text = "-" if value is None else str(value)
        if self.width is not None:
            text = text.rjust(self.width)
        out = Text()
        if self.label:
            out.append(f"{self.label} ", style="dim")
        out.append(text, style=self.style)
        return out


class StageColumn(ProgressColumn):
    """``2/3 phase1`` (stage number of the run, and its name)."""

    def render(self, task: Task) -> Text:
        f = task.fields
        return Text.assemble((f"{f['index'] + 1}/{f['stages']} ", "dim"), (str(f["name"]), "bold cyan"))


class EpochStepColumn(ProgressColumn):
    """``epoch 1/4 step 10/21``."""

    def render(self, task: Task) -> Text:
        f = task.fields
        return Text.assemble(
            ("epoch ", "dim"), f"{f['epoch']}/{f['epochs']}", ("  step ", "dim"), f"{f['step']}/{f['steps']}"
        )


def make_progress(console: Console) -> Progress:
    """The live display: one row per stage with its own bar, metrics and ETA."""
    return Progress(
        StageColumn(),
        EpochStepColumn(),
        BarColumn(bar_width=24),
        FieldColumn("loss", "loss", width=6),
        FieldColumn("accuracy", "acc", "green", width=6),
        FieldColumn("sparsity", "sparsity", "magenta", width=6),
        FieldColumn("bits", "bits", "yellow"),
        TimeElapsedColumn(),
        TextEta(),
        console=console,
        transient=False,
        refresh_per_second=8,
    )


class TextEta(TimeRemainingColumn):
    """``ETA 0:00:12`` while a stage runs, nothing once it is done."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("")
        remaining = super().render(task)
        return Text.assemble(("ETA ", "dim"), remaining)


class ProgressRenderer:
    """A pipeline sink. ``live=True``: rich progress bars; ``False``: one plain line per epoch.

    ``quiet`` silences everything but warnings. Use as a context manager around the run.
    """

    def __init__(self, console: Console, *, live: bool, quiet: bool = False) -> None:
        self.console = console
        self.live = live and not quiet
        self.quiet = quiet
        self.progress: Progress | None = make_progress(console) if self.live else None
        self.stages: tuple[str, ...] = ()
        self.tasks: dict[int, TaskID] = {}
        self.steps: dict[int, int] = {}
        self.epochs: dict[int, int] = {}
        self.started = False
        self.checkpointed = False
        self.last_checkpoint: str | None = None
        self._t0 = time.monotonic()
        self._stage_t0: dict[int, float] = {}

    # context manager: the live display is shown while the run lasts
    def __enter__(self) -> ProgressRenderer:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Any) -> None:
        handler = getattr(self, f"on_{type(event).__name__}", None)
        if handler is not None:
            handler(event)

    def _print(self, *renderables: Any, **kwargs: Any) -> None:
        if self.quiet:
            return
        target = self.progress.console if self.progress is not None else self.console
        target.print(*renderables, **kwargs)

    def _plain(self, line: str) -> None:
        """Print ``line`` as it is (no markup, no :emoji: codes, no wrapping)."""
        if self.quiet:
            return
        target = self.progress.console if self.progress is not None else self.console
        target.print(Text(line), highlight=False, soft_wrap=True)

    # the events
    def on_RunStarted(self, e: Any) -> None:
        self.started = True
        self.stages = tuple(e.stages)
        self._plain(f"recipe {e.recipe} -> {e.output_dir}")
        self._plain(f"stages: {' -> '.join(self.stages)}")
        if e.resumed_from:
            self._plain(f"resuming from {e.resumed_from}")

    def on_StageStarted(self, e: Any) -> None:
        self.steps[e.index] = e.steps_per_epoch
        self.epochs[e.index] = e.epochs
        self._stage_t0[e.index] = time.monotonic()
        if self.progress is not None:
            self.tasks[e.index] = self.progress.add_task(
                e.name,
                total=max(1, e.epochs * e.steps_per_epoch),
                index=e.index,
                stages=len(self.stages) or e.index + 1,
                name=e.name,
                epoch=0,
                epochs=e.epochs,
                step=0,
                steps=e.steps_per_epoch,
                loss=None,
                accuracy=None,
                sparsity=None,
                bits=None,
            )
        else:
            self._plain(f"stage {self._stage_label(e.index)} ({e.type}): {_count(e.epochs, 'epoch')} "
                        f"of {_count(e.steps_per_epoch, 'step')}")

    def on_StepEnded(self, e: Any) -> None:
        if self.progress is None or e.stage not in self.tasks:
            return
        steps = self.steps.get(e.stage, 1)
        self.progress.update(
            self.tasks[e.stage],
            completed=e.epoch * steps + e.step + 1,
            epoch=e.epoch + 1,
            step=e.step + 1,
            loss=f"{e.loss:.4f}",
        )

    def on_EpochEnded(self, e: Any) -> None:
        extra = "".join(f"  {k} {_metric(k, v)}" for k, v in sorted(e.extra.items()))
        line = (
            f"stage {self._stage_label(e.stage)}  epoch {e.epoch + 1}/{self.epochs.get(e.stage, '?')}  "
            f"loss {e.loss:.4f}  acc {percent(e.accuracy)}  sparsity {percent(e.sparsity)}  "
            f"bits {e.bits}{extra}  [{time.monotonic() - self._stage_t0.get(e.stage, self._t0):.1f}s]"
        )
        if self.progress is not None and e.stage in self.tasks:
            steps = self.steps.get(e.stage, 1)
            self.progress.update(
                self.tasks[e.stage],
                completed=(e.epoch + 1) * steps,
                epoch=e.epoch + 1,
                loss=f"{e.loss:.4f}",
                accuracy=percent(e.accuracy),
                sparsity=percent(e.sparsity),
                bits=e.bits,
            )
            self.progress.console.print(Text(line, style="dim"), soft_wrap=True)
        else:
            self._plain(line)

    def on_Pruned(self, e: Any) -> None:
        self._plain(
            f"stage {self._stage_label(e.stage)}  pruning round {e.round + 1}: "
            f"target {percent(e.target)}, achieved {percent(e.achieved)}"
        )

    def on_StageEnded(self, e: Any) -> None:
        if self.progress is not None and e.index in self.tasks:
            task = self.tasks[e.index]
            self.progress.update(task, completed=self.progress.tasks[task].total, accuracy=percent(e.accuracy))
        self._plain(f"stage {self._stage_label(e.index)} done: accuracy {percent(e.accuracy)}")

    def on_Checkpointed(self, e: Any) -> None:
        self.checkpointed = True
        self.last_checkpoint = e.path

    def on_Note(self, e: Any) -> None:
        if e.level == "info":
            self._print(Text(f"note: {e.text}", style="dim"), soft_wrap=True)
        else:
            target = self.progress.console if self.progress is not None else self.console
            target.print(Text(f"{e.level}: {e.text}", style="yellow"), soft_wrap=True)

    def _stage_label(self, index: int) -> str:
        total = len(self.stages)
        name = self.stages[index] if index < total else "?"
        return f"{index + 1}/{total} {name}" if total else f"{index + 1} {name}"


def _metric(name: str, value: float) -> str:
    return percent(value) if "accuracy" in name else f"{value:.4f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
