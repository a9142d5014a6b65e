"""Rendering the pipeline's events: a rich live display on a terminal, plain lines otherwise.

The core emits events (:mod:`squeezer.pipeline.events`) to a sink and never renders them; a
:class:`ProgressRenderer` is such a sink. Events are matched by class name so that this module
(imported for ``--help``) does not import the pipeline, and with it torch.
"""

from __future__ import annotations

import os
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task, TaskID
from rich.text import Text


def percent(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def metric_text(metric: str, value: float | None) -> str:
    """A task's metric as the user reads it: accuracy in percent, others (perplexity, r2) as numbers."""
    if metric == "accuracy":
        return percent(value)
    return "-" if value is None or value != value else f"{value:.4g}"


def fit(fields: list[str], width: int) -> str:
    """``fields`` joined by two spaces, or by one when that is too wide; never wider than ``width``
    (the line is cut with an ellipsis: a line that wraps at 80 columns reads as several)."""
    for sep in ("  ", " "):
        line = sep.join(f for f in fields if f)
        if len(line) <= width:
            return line
    return line[: max(1, width - 1)] + "…"


def _shown(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (shorter lines)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "-:--:--"
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StageRow(ProgressColumn):
    """A stage's live row, one line at any width: ``2/3 phase1 ━━━━╸━━━  epoch 3/20  loss 0.1234
    acc 97.1%  sparsity 69.8%  bits 4/8  ETA 0:00:12``. What does not fit goes, least useful first:
    the bar shrinks (to 6 cells), then bits, the step count and the elapsed time are left out."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def render(self, task: Task) -> Text:
        f = task.fields
        width = max(20, self.console.width - 1)  # a line of exactly the terminal's width may wrap
        name = f"{f['index'] + 1}/{f['stages']} {f['name']}"
        epoch = f"epoch {f['epoch']}/{f['epochs']}"
        step = f"step {f['step']}/{f['steps']}"
        metrics = [f"loss {f['loss'] or '-'}", f"acc {f['accuracy'] or '-'}", f"sparsity {f['sparsity'] or '-'}"]
        bits = f"bits {f['bits']}" if f["bits"] else ""
        eta = f"ETA {_clock(task.time_remaining)}" if not task.finished else _clock(task.elapsed)
        for bar, with_step, with_bits in ((24, True, True), (12, True, True), (12, False, True), (6, False, True),
                                          (6, False, False)):
            parts = [epoch, step if with_step else "", *metrics, bits if with_bits else "", eta]
            rest = "  ".join(p for p in parts if p)
            if len(name) + bar + 2 + 2 + len(rest) <= width:
                break
        done = task.completed / task.total if task.total else 0.0
        filled = round(bar * min(1.0, done))
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(name, style="bold cyan")
        text.append(" ")
        text.append("━" * filled, style="magenta")
        text.append("━" * (bar - filled), style="grey23")
        text.append("  ")
        text.append(fit([p for p in parts if p], max(1, width - len(name) - bar - 3)))
        text.truncate(width, overflow="ellipsis")
        return text


def make_progress(console: Console) -> Progress:
    """The live display: one row per running stage (finished ones collapse into a printed line)."""
    return Progress(StageRow(console), console=console, transient=False, refresh_per_second=8, expand=False)


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
        self._kd_started: set[int] = set()

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
        self._plain(f"recipe {_shown(e.recipe)} -> {_shown(e.output_dir)}")
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
        width = self._width()
        elapsed = time.monotonic() - self._stage_t0.get(e.stage, self._t0)
        line = fit([self._stage_label(e.stage), f"epoch {e.epoch + 1}/{self.epochs.get(e.stage, '?')}",
                    f"loss {e.loss:.4f}", f"{_short(e.metric)} {metric_text(e.metric, e.accuracy)}",
                    f"sparsity {percent(e.sparsity)}",
                    f"bits {e.bits}", f"[{elapsed:.1f}s]"], width)
        lines = [line]
        extra = dict(e.extra)
        parts = parts_line(extra, width, e.metric)
        if parts:
            lines.append(parts)
        if "student_kd" in extra and e.stage not in self._kd_started:
            self._kd_started.add(e.stage)
            lines.append(fit(["  note: KD has started: loss is now CE + KD terms (the jump is no divergence)"],
                             width))
        if self.progress is not None and e.stage in self.tasks:
            steps = self.steps.get(e.stage, 1)
            self.progress.update(
                self.tasks[e.stage],
                completed=(e.epoch + 1) * steps,
                epoch=e.epoch + 1,
                loss=f"{e.loss:.4f}",
                accuracy=metric_text(e.metric, e.accuracy),
                sparsity=percent(e.sparsity),
                bits=e.bits,
            )
            for text in lines:
                self.progress.console.print(Text(text, style="dim"), soft_wrap=True)
        else:
            for text in lines:
                self._plain(text)

    def on_Pruned(self, e: Any) -> None:
        if self.progress is not None and e.stage in self.tasks:  # the live row shows the sparsity now reached
            self.progress.update(self.tasks[e.stage], sparsity=percent(e.achieved))
        self._plain(fit([self._stage_label(e.stage), f"pruning round {e.round + 1}:",
                         f"target {percent(e.target)}, achieved {percent(e.achieved)}"], self._width()))

    def on_StageEnded(self, e: Any) -> None:
        if self.progress is not None and e.index in self.tasks:  # a finished stage collapses into its line
            self.progress.remove_task(self.tasks.pop(e.index))
        elapsed = time.monotonic() - self._stage_t0.get(e.index, self._t0)
        self._plain(fit([f"{self._stage_label(e.index)} done:", f"{e.metric} {metric_text(e.metric, e.accuracy)}",
                         f"[{_clock(elapsed)}]"], self._width()))

    def on_Checkpointed(self, e: Any) -> None:
        self.checkpointed = True
        self.last_checkpoint = e.path

    def on_Note(self, e: Any) -> None:
        if e.level == "info":
            self._print(Text(f"note: {e.text}", style="dim"), soft_wrap=True)
        else:
            target = self.progress.console if self.progress is not None else self.console
            target.print(Text(f"{e.level}: {e.text}", style="yellow"), soft_wrap=True)

    def _width(self) -> int:
        """Lines stay within the console (80 columns when it is not a terminal)."""
        return max(40, (self.progress.console if self.progress is not None else self.console).width - 1)

    def _stage_label(self, index: int) -> str:
        total = len(self.stages)
        name = self.stages[index] if index < total else "?"
        return f"{index + 1}/{total} {name}" if total else f"{index + 1} {name}"


# how the stages' extra metrics read (the mutual stage: the student's CE and KD of the epoch's last
# step, the teacher's loss of that step and its accuracy after the epoch)
_PARTS = {"student_ce": "student ce", "student_kd": "kd", "teacher_loss": "teacher loss",
          "teacher_accuracy": "teacher acc"}


def _short(metric: str) -> str:
    return "acc" if metric == "accuracy" else metric


def _metric(name: str, value: float, metric: str = "accuracy") -> str:
    return metric_text(metric, value) if "accuracy" in name else f"{value:.4f}"


def parts_line(extra: dict[str, float], width: int, metric: str = "accuracy") -> str:
    """The second line of an epoch with extra metrics, e.g. ``  student ce 0.0412 + kd 7.0300 (epoch
    mean)  teacher loss 0.0500  teacher acc 99.5%``; empty without extras."""
    if not extra:
        return ""
    fields = []
    step = [f"{_PARTS[k]} {extra[k]:.4f}" for k in ("student_ce", "student_kd") if k in extra]
    if step:
        fields.append(" + ".join(step) + " (epoch mean)")
    teacher = [f"{_PARTS[k].split()[-1] if k == 'teacher_loss' else _short(metric)} {_metric(k, extra[k], metric)}"
               for k in ("teacher_loss", "teacher_accuracy")
               if k in extra]
    if teacher:
        fields.append("teacher " + ", ".join(teacher))
    for key in sorted(extra):
        if key not in _PARTS:
            fields.append(f"{key} {_metric(key, extra[key])}")
    return "  " + fit(fields, width - 2)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
