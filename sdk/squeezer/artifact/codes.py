"""Integer codes of a quantized weight, checked against the quantizer that produced them."""

from __future__ import annotations

from typing import Any

import torch

from squeezer.errors import PluginError


def checked_codes(
    q: Any, kept: torch.Tensor, mask: torch.Tensor, path: str, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q.quantize(kept)`` as ``(codes, scale)``, codes zeroed outside ``mask``.

    Checked, since both the artifact and the ONNX export rebuild the weight from them: integer
    codes of the weight's shape, a floating scale that broadcasts to it, and ``codes * scale``
    equal bitwise to the quantizer's own output. A violation names the quantizer plugin.
    """
    quantize = getattr(q, "quantize", None)
    if not callable(quantize):
        raise PluginError(f"{source}: quantizer for {path} has no quantize() returning (codes, scale)")
    codes, scale = quantize(kept)
    student = q(kept)
    if not isinstance(codes, torch.Tensor) or codes.shape != kept.shape:
        raise PluginError(f"{source}: quantize() for {path} must return codes of shape {tuple(kept.shape)}")
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
        raise PluginError(f"{source}: quantize() for {path} must return a floating scale tensor")
    codes = torch.where(mask, codes, codes.new_zeros(()))
    try:
        recon = codes.to(scale.dtype) * scale
    except RuntimeError as e:
        raise PluginError(f"{source}: scale of {path} does not broadcast to its weight ({e})") from e
    if recon.shape != kept.shape or not torch.equal(recon, student):
        raise PluginError(f"{source}: for {path}, codes * scale from quantize() differ from the quantizer's output")
    if codes.is_floating_point() and not bool((codes == codes.round()).all()):
        raise PluginError(f"{source}: quantize() for {path} returned non-integer codes")
    return codes, scale
