"""Integer codes of a quantized weight, checked against the quantizer that produced them."""

from __future__ import annotations

from typing import Any

import torch

from squeezer import contracts
from squeezer.errors import PluginError


def checked_codes(
    q: Any, kept: torch.Tensor, mask: torch.Tensor, path: str, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q.quantize(kept)`` as ``(codes, scale)``, codes zeroed outside ``mask``, checked by the
    quantizer contract (:func:`squeezer.contracts.quantizer_codes`, the one the conformance kit
    applies), since the artifact and the ONNX export rebuild the weight from them. A violation
    names the quantizer plugin."""
    try:
        return contracts.quantizer_codes(q, kept, mask)
    except contracts.ContractViolation as exc:
        raise PluginError(f"{source}: quantizer for {path}: {exc}") from None
