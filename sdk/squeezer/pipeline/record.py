"""The run record: what a stage learns that later stages, a resumed run and the summary read.

One typed, versioned record instead of free-form string keys: a stage sets a field, the
checkpoint stores :meth:`RunRecord.to_json` and a resumed run reads it back with
:meth:`RunRecord.from_json`, which checks every field (the same schema for writer and reader).
"""

from __future__ import annotations

from typing import Any

import attrs

#: the record's format; a checkpoint written with another is refused, naming both
VERSION = 1
#: keys older squeezers wrote that are no longer read (accepted and dropped)
RETIRED = frozenset({"layers", "model_factory"})


@attrs.define(kw_only=True)
class RunRecord:
    """Cross-stage state of one run."""

    #: the weights the recipe's targets resolved to (set by the first stage that attaches masks)
    targets: list[str] | None = None
    #: bit width per quantized weight
    bits: dict[str, int] = attrs.field(factory=dict)
    #: validation accuracy of the dense model (the last dense ``train`` stage)
    dense_accuracy: float | None = None
    #: validation accuracy at the end of each stage, by stage index (JSON keys are strings)
    stage_accuracy: dict[str, float] = attrs.field(factory=dict)
    #: the self-teacher's validation accuracy after each ``mutual`` stage's latest epoch, by stage index
    teacher_accuracy: dict[str, float] = attrs.field(factory=dict)
    #: the ``distill`` stage's teacher structure (:func:`squeezer.compress.spec`), to rebuild it on resume
    kd_teacher_spec: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **attrs.asdict(self)}

    @classmethod
    def from_json(cls, doc: Any, where: str = "records") -> RunRecord:
        """The record ``doc`` describes, checked (:func:`squeezer.pipeline.checkpoint.check_records`);
        ``ValueError`` names the first field at fault."""
        from squeezer.pipeline.checkpoint import check_records

        check_records(doc, where)
        fields = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in fields})
