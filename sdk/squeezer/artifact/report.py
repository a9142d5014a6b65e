"""What an artifact holds and how close it is to its information content.

For a compressed layer of ``n`` weights with ``nnz`` kept, quantized to ``b`` bits, the bound is
``nnz * b + n * H(nnz / n)`` bits: the codes of the kept weights plus the entropy of a mask of that
density (``H`` the binary entropy); an unquantized layer counts its kept values at their stored
width instead of ``b``. Scales and the rest of the state (biases, norms, ...) are stored as they
are and count at their own size on both sides of the ratio, as do activation quantizers' steps
(one scalar each, 4 bytes in float32: their grid is in the record). Nothing of the header (the record,
the safetensors table, the checksum) is in the bound: :attr:`ArtifactReport.file_ratio` is the
whole file over it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

from squeezer.artifact import format as fmt
from squeezer.artifact.maskcode import entropy_bits
from squeezer.artifact.reader import read


@attrs.frozen
class LayerReport:
    """One compressed weight in an artifact. Byte counts are those of its tensors in the file."""

    name: str
    shape: tuple[int, ...]
    numel: int
    nnz: int
    encoding: str
    bits: int | None
    mask_coding: str
    codes_bytes: int
    mask_bytes: int
    scale_bytes: int
    values_bytes: int
    bound_bits: float

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / self.numel if self.numel else 0.0

    @property
    def bytes(self) -> int:
        """Bytes of this layer in the artifact: codes (or values) + mask + scale."""
        return self.codes_bytes + self.mask_bytes + self.scale_bytes + self.values_bytes

    @property
    def mask_bound_bits(self) -> float:
        return entropy_bits(self.numel, self.nnz)

    @property
    def bound_bytes(self) -> float:
        """Information bound ``nnz * b + n * H(d)`` in bytes (scales not included)."""
        return self.bound_bits / 8

    @property
    def ratio(self) -> float:
        """Bytes stored over the bound plus the scales (1.0 is optimal)."""
        denominator = self.bound_bytes + self.scale_bytes
        return self.bytes / denominator if denominator else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["shape"] = list(self.shape)
        d.update(
            sparsity=self.sparsity,
            bytes=self.bytes,
            mask_bound_bits=self.mask_bound_bits,
            bound_bytes=self.bound_bytes,
            ratio=self.ratio,
        )
        return d


@attrs.frozen
class ArtifactReport:
    """Sizes of an artifact, per compressed layer and in total.

    ``payload_bytes``: all tensor bytes; ``bound_bytes``: the layers' information bounds plus
    their scales plus the state stored as-is; ``dense_fp32_bytes``: ``4 * numel`` over every
    tensor of the model (what an uncompressed FP32 state would take).
    """

    path: str
    format: str
    version: int
    info: Mapping[str, Any]
    layers: tuple[LayerReport, ...]
    state_numel: int
    state_bytes: int
    payload_bytes: int
    bound_bytes: float
    file_bytes: int
    dense_fp32_bytes: int
    #: bytes of the activation quantizers' steps (in the payload and the bound)
    activation_bytes: int = 0

    @property
    def numel(self) -> int:
        return sum(layer.numel for layer in self.layers) + self.state_numel

    @property
    def nnz(self) -> int:
        return sum(layer.nnz for layer in self.layers)

    @property
    def ratio(self) -> float:
        """``payload_bytes / bound_bytes`` (1.0 is optimal)."""
        return self.payload_bytes / self.bound_bytes if self.bound_bytes else 1.0

    @property
    def file_ratio(self) -> float:
        """``file_bytes / bound_bytes``: the whole file, header included, over the bound."""
        return self.file_bytes / self.bound_bytes if self.bound_bytes else 1.0

    @property
    def header_bytes(self) -> int:
        """Bytes of the file that are not payload: the record, the safetensors header, the checksum."""
        return self.file_bytes - self.payload_bytes

    @property
    def compression(self) -> float:
        """``dense_fp32_bytes / file_bytes``."""
        return self.dense_fp32_bytes / self.file_bytes if self.file_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "version": self.version,
            "info": dict(self.info),
            "layers": [layer.to_dict() for layer in self.layers],
            "numel": self.numel,
            "nnz": self.nnz,
            "state_numel": self.state_numel,
            "state_bytes": self.state_bytes,
            "payload_bytes": self.payload_bytes,
            "bound_bytes": self.bound_bytes,
            "file_bytes": self.file_bytes,
            "dense_fp32_bytes": self.dense_fp32_bytes,
            "activation_bytes": self.activation_bytes,
            "ratio": self.ratio,
            "file_ratio": self.file_ratio,
            "header_bytes": self.header_bytes,
            "compression": self.compression,
        }

    def summary(self) -> str:
        """A plain-text table of the layers and the totals."""
        rows = [
            f"{'layer':<32} {'shape':<18} {'sparsity':>8} {'bits':>4} {'mask':>6} {'bytes':>10} {'ratio':>6}"
        ]
        for layer in self.layers:
            rows.append(
                f"{layer.name:<32} {'x'.join(map(str, layer.shape)):<18} {layer.sparsity:>8.2%} "
                f"{layer.bits if layer.bits is not None else '-':>4} {layer.mask_coding:>6} "
                f"{layer.bytes:>10} {layer.ratio:>6.3f}"
            )
        rows.append(
            f"total: payload {self.payload_bytes} B, bound {self.bound_bytes:.0f} B "
            f"(ratio {self.ratio:.3f}), file {self.file_bytes} B (/ bound {self.file_ratio:.3f}), "
            f"dense fp32 {self.dense_fp32_bytes} B ({self.compression:.1f}x)"
        )
        return "\n".join(rows)


def build_report(
    path: str, meta: Mapping[str, Any], nbytes: Mapping[str, int], file_bytes: int
) -> ArtifactReport:
    """The report of a validated metadata document, given the byte size of each tensor."""
    layers = []
    for layer in meta["layers"]:
        p = layer["path"]
        numel, nnz = layer["numel"], layer["nnz"]
        if layer["encoding"] == "quantized":
            value_bits = layer["bits"]
        else:
            value_bits = 8 * nbytes[fmt.layer_key(p, "values")] // nnz if nnz else 0
        layers.append(
            LayerReport(
                name=p,
                shape=tuple(layer["shape"]),
                numel=numel,
                nnz=nnz,
                encoding=layer["encoding"],
                bits=layer["bits"],
                mask_coding=layer["mask_coding"],
                codes_bytes=nbytes.get(fmt.layer_key(p, "codes"), 0),
                mask_bytes=nbytes[fmt.layer_key(p, "mask")],
                scale_bytes=nbytes.get(fmt.layer_key(p, "scale"), 0),
                values_bytes=nbytes.get(fmt.layer_key(p, "values"), 0),
                bound_bits=nnz * value_bits + entropy_bits(numel, nnz),
            )
        )
    state_numel = sum(_numel(s["shape"]) for s in meta["state"])
    state_bytes = sum(nbytes[fmt.state_key(s["name"])] for s in meta["state"])
    layer_total = sum(layer.bytes for layer in layers)
    activation_bytes = sum(nbytes[fmt.activation_key(a["module"])] for a in meta.get("activations", ()))
    return ArtifactReport(
        path=path,
        format=meta["format"],
        version=meta["version"],
        info=meta["info"],
        layers=tuple(layers),
        state_numel=state_numel,
        state_bytes=state_bytes,
        payload_bytes=layer_total + state_bytes + activation_bytes,
        bound_bytes=sum(layer.bound_bytes + layer.scale_bytes for layer in layers) + state_bytes + activation_bytes,
        file_bytes=file_bytes,
        dense_fp32_bytes=4 * (sum(layer.numel for layer in layers) + state_numel),
        activation_bytes=activation_bytes,
    )


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def torch_save_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``, for honest comparisons with an artifact."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def inspect(path: str | os.PathLike[str]) -> ArtifactReport:
    """Read and verify the artifact at ``path``; report its sizes per layer and in total."""
    art = read(path)
    return build_report(art.path, art.meta, art.nbytes, art.file_bytes)
