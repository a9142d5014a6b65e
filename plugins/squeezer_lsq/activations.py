"""LSQ activation quantization: fake-quantize the inputs of chosen modules.

The quantizer and the functions that attach it live in the engine
(:mod:`squeezer.engine.activations`), so that every driver, the artifact and the ONNX export
share one implementation; they are re-exported here under their earlier names. The step is one
learnable scalar per quantized input, initialized (from the first batch seen, or by the engine's
calibration) to ``2 * mean(|x|) / sqrt(Qp)``; its gradient is scaled by ``1 / sqrt(N_features * Qp)``
with ``N_features`` the number of elements of one sample (Esser et al., 2020, section 2.2).
"""

from __future__ import annotations

from squeezer.engine.activations import (
    CHILD_NAME,
    LsqActivationQuantizer,
    attach_activation_quantizers,
    remove_activation_quantizers,
)

__all__ = ["CHILD_NAME", "LsqActivationQuantizer", "attach_activation_quantizers", "remove_activation_quantizers"]
