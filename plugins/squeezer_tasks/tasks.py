"""The built-in tasks. Each turns a model's outputs and a batch's targets into the training loss,
the rows distillation compares, and summable statistics of the validation metric.

Sums, not means, so the core can add a loader's batches whatever their sizes: the metric of a
whole split is ``score(sum of stats over its batches)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:  # torch is imported lazily so that listing plugins stays instant
    import torch


def _shape(t: Any) -> str:
    return str(tuple(getattr(t, "shape", ())))


def _integer_targets(targets: torch.Tensor) -> None:
    import torch

    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices (torch.long), got {str(targets.dtype)[6:]}; "
                         "for real-valued targets use task = \"regression\"")


def _kept(rows: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep = labels != ignore_index
    return (rows, labels) if bool(keep.all()) else (rows[keep], labels[keep])


class _CrossEntropy:
    """The tasks whose outputs are class logits: rows of logits and their class indices (``_rows``)
    give the loss, the positions distillation compares, and the summed loss and hits."""

    def _rows(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(*self._rows(outputs, targets))

    def positions(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._rows(outputs, targets)[0]

    def stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        import torch.nn.functional as F

        rows, labels = self._rows(outputs, targets)
        classes = rows.shape[-1]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(f"targets must lie in 0..{classes - 1} (the model's {classes} logits), "
                             f"got {int(labels.min())}..{int(labels.max())}")
        return {"loss_sum": float(F.cross_entropy(rows.float(), labels, reduction="sum")),
                "count": float(labels.numel()), "correct": float((rows.argmax(dim=-1) == labels).sum())}


@attrs.frozen(kw_only=True)
class Classification(_CrossEntropy):
    """One class per example: cross-entropy, top-1 accuracy.

    Logits ``[batch, classes]``, targets ``[batch]``; examples whose target is ``ignore_index``
    are left out."""

    #: per position (``token_classification``) instead of per example
    per_position: ClassVar[bool] = False

    ignore_index: int = attrs.field(default=-100, metadata={"help": "target value of positions to leave out"})
    metric: str = attrs.field(default="accuracy", init=False)
    higher_is_better: bool = attrs.field(default=True, init=False)

    def _rows(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits as rows ``[N, classes]`` and their targets ``[N]``, ignored positions left out."""
        _integer_targets(targets)
        dims = 3 if self.per_position else 2
        if outputs.dim() != dims or tuple(outputs.shape[:-1]) != tuple(targets.shape):
            expected = ("(batch, positions, classes) logits for (batch, positions) class indices" if self.per_position
                        else "(batch, classes) logits for (batch,) class indices")
            raise ValueError(
                f"outputs of shape {tuple(outputs.shape)} do not fit targets of shape {tuple(targets.shape)}: "
                f"{'token_' if self.per_position else ''}classification expects {expected}; per-position "
                "labels: task = \"token_classification\"; a language model predicting its next token: "
                "task = \"language_model\"")
        return _kept(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1).long(), self.ignore_index)

    def score(self, stats: Mapping[str, float]) -> float:
        return stats["correct"] / stats["count"] if stats["count"] else math.nan


@attrs.frozen(kw_only=True)
class TokenClassification(Classification):
    """One class per position (tagging): cross-entropy, accuracy over the positions kept.

    Logits ``[batch, positions, classes]``, targets ``[batch, positions]``; positions whose
    target is ``ignore_index`` (padding, sub-word continuations) are left out."""

    per_position: ClassVar[bool] = True


@attrs.frozen(kw_only=True)
class LanguageModel(_CrossEntropy):
    """Next-token prediction (causal language model): shifted cross-entropy, perplexity.

    Logits ``[batch, length, vocab]`` at position ``i`` predict token ``i + 1`` of the targets
    ``[batch, length]`` (the batch's ``labels``, or else its ``input_ids``); targets equal to
    ``ignore_index`` (padding) are left out. Perplexity is ``exp`` of the mean loss per
    predicted token."""

    ignore_index: int = attrs.field(default=-100, metadata={"help": "target value of tokens to leave out (padding)"})
    metric: str = attrs.field(default="perplexity", init=False)
    higher_is_better: bool = attrs.field(default=False, init=False)

    def split(self, batch: Any) -> tuple[Any, Any] | None:
        """A dict batch without labels predicts its own ``input_ids``; anything else is split as
        usual (``None``: the core's default)."""
        if isinstance(batch, Mapping) and "input_ids" in batch and not any(
                k in batch for k in ("labels", "label", "target", "y")):
            return dict(batch), batch["input_ids"]
        return None

    def _rows(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _integer_targets(targets)
        if outputs.dim() != 3 or tuple(outputs.shape[:2]) != tuple(targets.shape):
            raise ValueError(f"outputs of shape {_shape(outputs)} do not fit targets of shape {_shape(targets)}: a "
                             "language model gives (batch, length, vocab) logits for (batch, length) tokens")
        rows = outputs[:, :-1].reshape(-1, outputs.shape[-1])
        return _kept(rows, targets[:, 1:].reshape(-1).long(), self.ignore_index)

    def score(self, stats: Mapping[str, float]) -> float:
        if not stats["count"]:
            return math.nan
        return math.exp(min(stats["loss_sum"] / stats["count"], 700.0))  # exp overflows past ~709


_REGRESSION_METRICS = ("r2", "mae", "mse")


@attrs.frozen(kw_only=True)
class Regression:
    """Real-valued targets: mean squared error; metric r2, mae or mse.

    Outputs of the same number of values per example as the targets (``[batch]`` and
    ``[batch, 1]`` alike). ``r2`` is the coefficient of determination over the whole split,
    1 - SSE/SST. Distil with ``distillation = "mse"``: a softmax over one output says nothing."""

    metric: str = attrs.field(default="r2", validator=attrs.validators.in_(_REGRESSION_METRICS),
                              metadata={"help": "the validation metric: r2, mae or mse"})

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "r2"

    def _pair(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = targets.shape[0] if targets.dim() else 1
        if outputs.numel() != targets.numel() or (outputs.dim() and outputs.shape[0] != n):
            raise ValueError(f"outputs of shape {_shape(outputs)} do not fit targets of shape {_shape(targets)}: "
                             "regression expects the same number of values per example")
        return outputs.reshape(n, -1), targets.reshape(n, -1).to(outputs.dtype)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.mse_loss(*self._pair(outputs, targets))

    def positions(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._pair(outputs, targets)[0]

    def stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        out, y = (t.double() for t in self._pair(outputs, targets))
        err = out - y
        return {"loss_sum": float((err * err).sum()), "count": float(y.numel()), "abs_sum": float(err.abs().sum()),
                "y_sum": float(y.sum()), "y_sq_sum": float((y * y).sum())}

    def score(self, stats: Mapping[str, float]) -> float:
        n = stats["count"]
        if not n:
            return math.nan
        if self.metric == "mae":
            return stats["abs_sum"] / n
        if self.metric == "mse":
            return stats["loss_sum"] / n
        total = stats["y_sq_sum"] - stats["y_sum"] ** 2 / n
        return 1.0 - stats["loss_sum"] / total if total > 0 else math.nan
