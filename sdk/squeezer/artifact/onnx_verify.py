"""Check an exported ONNX model in onnxruntime against the student's outputs in torch.

The session is the one a deployment would open (CPU provider, every graph optimization on) with
one setting: ``session.qdq_matmulnbits_accuracy_level = "1"``. Without it onnxruntime replaces
``DequantizeLinear -> MatMul`` (a Linear on a 3-D input, a transformer's projections, any weight
the exporter feeds to a MatMul) by its ``MatMulNBits`` kernel computing with activations quantized
to int8 on the fly (accuracy level 4), which puts its outputs about 1e-2 off the student's (measured
on GPT-2, BERT and Whisper from tiny configs); at level 1 the kernel computes in float32.
A file with quantized weights only is also checked in a session with ``session.disable_quant_qdq
= "1"``, where onnxruntime folds each constant weight's ``DequantizeLinear`` into a float weight
when it loads the model (float kernels at FP32 speed; the file stays small).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

#: onnxruntime session config entry: the compute precision of MatMulNBits (1 = float32)
ORT_MATMULNBITS_ACCURACY = "session.qdq_matmulnbits_accuracy_level"
#: onnxruntime session config entry: QDQ handling off, so constant DequantizeLinear is folded at load
ORT_DISABLE_QDQ = "session.disable_quant_qdq"
#: the setting to print for users (the export's output, the docs)
SESSION_HINT = (f'SessionOptions().add_session_config_entry("{ORT_MATMULNBITS_ACCURACY}", "1") '
                "(else MatMulNBits quantizes activations: ~1e-2 off)")
#: with quantized weights only: the alternative that also runs at FP32 speed
WEIGHTS_ONLY_HINT = (f'{SESSION_HINT}; or "{ORT_DISABLE_QDQ}" = "1" (weights dequantized once at load: '
                     "float kernels, FP32 speed)")


def session_options(ort: Any, **config: str) -> Any:
    """onnxruntime session options that run the exported model as the student computes it
    (``config``: more session config entries, e.g. ``{ORT_DISABLE_QDQ: "1"}`` via ``**``)."""
    options = ort.SessionOptions()
    options.add_session_config_entry(ORT_MATMULNBITS_ACCURACY, "1")
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return options


@attrs.frozen
class Agreement:
    """How closely onnxruntime reproduced the student on every checked input."""

    #: largest |onnxruntime - torch| over every output element
    max_abs_diff: float
    #: rows (of outputs with a class axis last) whose argmax differs, among rows where the
    #: student's top two values are further apart than twice the error bound
    argmax_mismatches: int
    argmax_rows: int
    #: every element within ``atol + rtol * |torch|``
    within: bool


class VerificationError(ValueError):
    """onnxruntime cannot load or run the model, or its outputs do not have the student's shapes."""


def compare(
    ort: Any,
    data: bytes,
    feeds: list[dict[str, np.ndarray]],
    expected: list[list[np.ndarray]],
    rtol: float,
    atol: float,
    config: dict[str, str] | None = None,
) -> Agreement:
    """Run ``data`` on every feed and compare with ``expected`` (see :class:`Agreement`);
    ``config``: session config entries besides :func:`session_options`'s."""
    try:
        session = ort.InferenceSession(data, session_options(ort, **(config or {})),
                                       providers=["CPUExecutionProvider"])
    except Exception as e:
        raise VerificationError(f"onnxruntime cannot load the exported model: {first_line(e)}") from None
    max_diff, within, mismatches, rows = 0.0, True, 0, 0
    for feed, want in zip(feeds, expected, strict=True):
        try:
            got = session.run(None, feed)
        except Exception as e:
            raise VerificationError(f"onnxruntime failed to run the exported model: {first_line(e)}") from None
        if len(got) != len(want):
            raise VerificationError(f"{len(got)} outputs, torch has {len(want)}")
        for a, b in zip(got, want, strict=True):
            a = np.asarray(a)
            if a.shape != b.shape:
                raise VerificationError(f"output shape {a.shape}, torch has {b.shape}")
            if a.size == 0:
                continue
            if not (np.issubdtype(b.dtype, np.floating) or np.issubdtype(a.dtype, np.floating)):
                within = within and bool(np.array_equal(a, b))
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            within = within and bool(np.isclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True).all())
            both = np.isfinite(a64) & np.isfinite(b64)
            if both.any():
                max_diff = max(max_diff, float(np.abs(a64 - b64)[both].max()))
            if not np.array_equal(np.isfinite(a64), np.isfinite(b64)):
                max_diff = float("inf")
            if b64.ndim >= 2 and b64.shape[-1] >= 2:
                m, n = _argmax_mismatches(a64, b64, 2 * (atol + rtol * float(np.abs(b64[both]).max(initial=0))))
                mismatches, rows = mismatches + m, rows + n
    return Agreement(max_diff, mismatches, rows, within)


def _argmax_mismatches(got: np.ndarray, want: np.ndarray, margin: float) -> tuple[int, int]:
    """Rows whose argmax differs, among the rows whose top two values are more than ``margin`` apart."""
    g, w = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
    top2 = np.sort(np.nan_to_num(w, nan=-np.inf), axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > margin
    return int((g.argmax(1) != w.argmax(1))[clear].sum()), int(clear.sum())


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
