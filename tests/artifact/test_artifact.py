import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import squeezer.compress as sc
from squeezer.artifact import ArtifactReport, export, inspect, load, load_state_dict, torch_save_size
from squeezer.artifact import format as fmt
from squeezer.artifact.reader import read
from squeezer.errors import ArtifactError, ConfigError, PluginError, UntrustedFactoryError

#: the first 16 hex digits of sha256(format.ZDICT)
ZDICT_SHA256_PREFIX = "4a62eefbb2387809"

# --- a tiny quantizer, so these tests do not depend on a quantizer plugin ---------------------


class RoundQuantizer(nn.Module):
    """Symmetric per-channel rounding ``round(clamp(w / s, -qn, qp)) * s``."""

    def __init__(self, weight: torch.Tensor, bits: int, expose_range: bool = True) -> None:
        super().__init__()
        self.bits = bits
        self._qn, self._qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
        if expose_range:
            self.qn, self.qp = self._qn, self._qp
        dims = tuple(range(1, weight.dim()))
        amax = weight.detach().abs().amax(dim=dims, keepdim=True).clamp_min(1e-8)
        self.step = nn.Parameter(amax / max(self._qp, 1))

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.step.detach()
        return torch.round(torch.clamp(w / s, -self._qn, self._qp)), s

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        codes, s = self.quantize(w)
        return codes * s


@attrs.frozen
class RoundQuant:
    bits: int = 4
    expose_range: bool = True

    def build(self, weight: torch.Tensor) -> nn.Module:
        return RoundQuantizer(weight, self.bits, self.expose_range)


def make_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)
    )


def compressed(bits: int | None = 3, *, seed: int = 0, expose_range: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    model = make_model()
    sc.attach(model)
    sc.prune(model, lambda p, w: w.abs(), 0.8)
    if bits is not None:
        sc.attach_quantizers(model, lambda path: ("testq", RoundQuant(bits, expose_range)))
    model.train()
    with torch.no_grad():
        for _ in range(3):  # give the batch norm running statistics worth storing
            model(torch.randn(8, 1, 8, 8))
    return model.eval()


def weight(model: nn.Module, path: str) -> torch.Tensor:
    """The weight a module sees at ``path`` (the student, for a compressed weight)."""
    module, _, attr = path.rpartition(".")
    w = getattr(model.get_submodule(module), attr)
    assert isinstance(w, torch.Tensor)
    return w


X = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    export(compressed(), path, info={"recipe": "demo"})
    return path


def read_raw(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The record and the parts of a valid artifact, to craft variants of it."""
    art = read(path)
    return {k: v for k, v in art.meta.items() if k not in ("format", "version")}, dict(art.tensors)


def file_header(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The squeezer metadata object and the tensor table of a file, as its safetensors header says."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        table = {k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    return json.loads(meta[fmt.METADATA_KEY]), table


def rewrite(path: Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor], *, rehash: bool,
            header: dict[str, Any] | None = None) -> None:
    """Write ``doc`` and the parts ``tensors`` (in their order) as ``path``. ``rehash``: a
    consistent file, so only the check under test can object; else the old digest stays."""
    data = fmt.pack_data(doc, tensors.values())
    old, _ = file_header(path)
    top = {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION,
           "sha256": fmt.digest(data) if rehash else old["sha256"], **(header or {})}
    path.write_bytes(fmt.container(data, top))


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_quantized_round_trip_is_bitwise(tmp_path: Path, bits: int) -> None:
    model = compressed(bits)
    with torch.no_grad():
        expected = model(X)
        students = {path: weight(model, path).clone() for path in sc.masks(model)}
    export(model, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors", make_model())
    assert not loaded.training
    with torch.no_grad():
        # codes * scale is the same float32 product the quantizer computes, so equality is exact
        assert torch.equal(loaded(X), expected)
    for path, student in students.items():
        assert torch.equal(loaded.get_parameter(path), student)
    for name, t in model.state_dict().items():
        if "parametrizations" not in name:
            assert torch.equal(loaded.state_dict()[name], t), name


def test_range_is_inferred_when_the_quantizer_does_not_expose_it(tmp_path: Path) -> None:
    model = compressed(3, expose_range=False)
    with torch.no_grad():
        expected = model(X)
    export(model, tmp_path / "m.safetensors")
    doc, _ = read_raw(tmp_path / "m.safetensors")
    assert all(layer["qn"] is None and layer["offset"] == 4 and layer["signed"] for layer in doc["layers"])
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "m.safetensors", make_model())(X), expected)


def test_mask_only_round_trip(tmp_path: Path) -> None:
    model = compressed(None)
    with torch.no_grad():
        expected = model(X)
    report = export(model, tmp_path / "m.safetensors")
    assert all(layer.encoding == "float" and layer.bits is None for layer in report.layers)
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "m.safetensors", make_model())(X), expected)


def test_float16_option_halves_floats_and_stays_close(tmp_path: Path) -> None:
    model = compressed(None)
    with torch.no_grad():
        expected = model(X)
    full = export(model, tmp_path / "full.safetensors")
    half = export(model, tmp_path / "half.safetensors", float_dtype="float16")
    assert half.payload_bytes < 0.6 * full.payload_bytes
    loaded = load(tmp_path / "half.safetensors", make_model())
    assert weight(loaded, "0.weight").dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), expected, atol=2e-2, rtol=2e-2)


def test_kept_weights_with_code_zero_are_stored(tmp_path: Path) -> None:
    model = compressed(None)
    mask = sc.masks(model)["4.weight"]
    kept = mask.reshape(-1).nonzero()[:5, 0]
    with torch.no_grad():
        sc.original(model, "4.weight").view(-1)[kept] = 1e-6  # kept by the mask, rounds to code 0
    sc.attach_quantizers(model, lambda path: ("testq", RoundQuant(2)))
    with torch.no_grad():
        assert bool((weight(model, "4.weight").view(-1)[kept] == 0).all())
        expected = model(X)
    report = export(model, tmp_path / "m.safetensors")
    assert report.layers[1].nnz == int(mask.sum())
    assert report.layers[1].codes_bytes == (int(mask.sum()) * 2 + 7) // 8
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "m.safetensors", make_model())(X), expected)


def test_layout(artifact: Path) -> None:
    header, table = file_header(artifact)
    assert set(header) == fmt.HEADER_FIELDS
    assert (header["format"], header["version"]) == ("squeezer-artifact", 2)
    assert table == {"data": ("U8", [artifact.stat().st_size - 8 - _header_length(artifact)])}
    doc, tensors = read_raw(artifact)
    assert set(doc) == fmt.RECORD_FIELDS
    assert doc["info"] == {"recipe": "demo"}
    assert list(tensors) == [
        "layer/0.weight/mask",
        "layer/0.weight/codes",
        "layer/0.weight/scale",
        "layer/4.weight/mask",
        "layer/4.weight/codes",
        "layer/4.weight/scale",
        "state/0.bias",
        "state/1.weight",
        "state/1.bias",
        "state/1.running_mean",
        "state/1.running_var",
        "state/1.num_batches_tracked",
        "state/4.bias",
    ]  # the parts in file order
    assert not any("parametrizations" in k or "step" in k for k in tensors)  # no original, no step twice
    assert tensors["layer/4.weight/codes"].dtype == torch.uint8
    assert tensors["layer/4.weight/scale"].dtype == torch.float32
    assert tensors["layer/4.weight/scale"].shape == (10, 1)  # per channel
    assert tensors["state/1.num_batches_tracked"].dtype == torch.int64
    layer = doc["layers"][1]
    assert set(layer) == fmt.LAYER_FIELDS
    assert layer["quantizer"] == {"name": "testq", "options": {"bits": 3, "expose_range": True}}
    assert (layer["bits"], layer["qn"], layer["qp"], layer["signed"]) == (3, 4, 3, True)
    assert (layer["scale_shape"], layer["scale_dtype"]) == ([10, 1], "float32")
    assert layer["mask_bytes"] == tensors["layer/4.weight/mask"].numel()
    # the blob is the record, then the parts back to back: nothing else
    record = fmt.compress_record(doc)
    data = artifact.read_bytes()[-table["data"][1][0]:]
    assert data[: len(record)] == record
    assert data[len(record):] == b"".join(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                                          for t in tensors.values())


def _header_length(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def test_the_preset_dictionary_is_frozen() -> None:
    """ZDICT is part of format version 2: files written with it must stay readable."""
    import hashlib

    assert hashlib.sha256(fmt.ZDICT).hexdigest()[:16] == ZDICT_SHA256_PREFIX


def test_report(artifact: Path) -> None:
    report = inspect(artifact)
    assert isinstance(report, ArtifactReport)
    assert report.file_bytes == os.path.getsize(artifact)
    assert [layer.name for layer in report.layers] == ["0.weight", "4.weight"]
    linear = report.layers[1]
    assert (linear.shape, linear.numel, linear.bits) == ((10, 144), 1440, 3)
    assert linear.bytes == linear.codes_bytes + linear.mask_bytes + linear.scale_bytes
    assert linear.codes_bytes == (linear.nnz * 3 + 7) // 8
    assert 0.79 < sum(layer.numel - layer.nnz for layer in report.layers) / 1476 < 0.81
    assert report.numel == 36 + 1440 + 4 + 4 * 4 + 1 + 10
    assert report.dense_fp32_bytes == 4 * report.numel
    assert 1.0 <= report.ratio < 1.1
    d = json.loads(json.dumps(report.to_dict()))
    assert d["layers"][1]["name"] == "4.weight"
    assert d["payload_bytes"] == report.payload_bytes
    assert "total" in report.summary()
    assert export(compressed(), artifact, info={"recipe": "demo"}) == report


# --- loading without a model ---------------------------------------------------------------------


def test_load_without_model_needs_one(artifact: Path) -> None:
    with pytest.raises(ArtifactError, match="a model is needed"):
        load(artifact)


def test_load_without_model_uses_the_named_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_arch.py").write_text(
        "from torch import nn\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),"
        " nn.Linear(4 * 6 * 6, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = compressed()
    with torch.no_grad():
        expected = model(X)
    export(model, tmp_path / "m.safetensors", info={"model_factory": "my_arch:build"})
    with pytest.raises(UntrustedFactoryError, match="--trust-factory 'my_arch:build'"):
        load(tmp_path / "m.safetensors")  # a file's word is not enough to import and call a function
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "m.safetensors", trust=["my_arch"])(X), expected)
    monkeypatch.setenv("SQUEEZER_TRUST_FACTORIES", "other.*, my_arch:build")
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "m.safetensors")(X), expected)
    export(model, tmp_path / "bad.safetensors", info={"model_factory": "my_arch:missing"})
    with pytest.raises(ConfigError, match="module 'my_arch' has no attribute 'missing'"):
        load(tmp_path / "bad.safetensors", trust=["my_arch"])


def test_load_into_the_wrong_model(artifact: Path) -> None:
    with pytest.raises(ArtifactError, match="does not fit the model"):
        load(artifact, nn.Sequential(nn.Linear(3, 3)))
    other = make_model()
    other[4] = nn.Linear(4 * 6 * 6, 11)
    with pytest.raises(ArtifactError, match="shape"):
        load(artifact, other)
    with pytest.raises(ArtifactError, match="uncompressed"):
        load(artifact, compressed())


def test_load_state_dict(artifact: Path) -> None:
    state = load_state_dict(artifact)
    assert set(state) == set(make_model().state_dict())
    assert int((state["4.weight"] != 0).sum()) <= int(sc.masks(compressed())["4.weight"].sum())


# --- bad files ---------------------------------------------------------------------------------


def test_tampered_payload_byte(artifact: Path) -> None:
    data = bytearray(artifact.read_bytes())
    data[-5] ^= 0x01  # inside the tensor data
    artifact.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors: checksum mismatch"):
        load(artifact, make_model())


def test_tampered_metadata(artifact: Path) -> None:
    doc, tensors = read_raw(artifact)
    doc["layers"][1]["qp"] = 7  # schema-valid, but not what was written
    rewrite(artifact, doc, tensors, rehash=False)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        inspect(artifact)


def test_tampered_tensor_set(artifact: Path) -> None:
    doc, tensors = read_raw(artifact)
    tensors["state/extra"] = torch.zeros(3)  # bytes the record does not describe
    rewrite(artifact, doc, tensors, rehash=True)
    with pytest.raises(ArtifactError, match=r"describes [\d,]+ bytes of parts \(13 parts\), the file holds"):
        inspect(artifact)
    header, _ = file_header(artifact)
    data = artifact.read_bytes()[8 + _header_length(artifact):]
    save_file({"data": torch.frombuffer(bytearray(data), dtype=torch.uint8), "extra": torch.zeros(1)}, str(artifact),
              metadata={fmt.METADATA_KEY: json.dumps(header)})
    with pytest.raises(ArtifactError, match="one 1-d uint8 tensor 'data'"):
        inspect(artifact)


def test_truncated_file(artifact: Path) -> None:
    data = artifact.read_bytes()
    for cut in (0, 4, 8, 20, len(data) // 2, len(data) - 200, len(data) - 1):
        artifact.write_bytes(data[:cut])
        with pytest.raises(ArtifactError, match=r"model\.safetensors"):
            load(artifact, make_model())


@pytest.mark.parametrize("version", [3, 1])
def test_wrong_format_version(artifact: Path, version: int) -> None:
    doc, tensors = read_raw(artifact)
    rewrite(artifact, doc, tensors, rehash=True, header={"version": version})
    with pytest.raises(ArtifactError) as err:
        load(artifact, make_model())
    message = f"{artifact}: artifact format version {version} is not supported (this squeezer reads version 2)"
    if version == 1:
        message += "; re-export it from its run's checkpoint with this squeezer (squeezer export RUN_DIR --out FILE)"
    assert str(err.value) == message


def test_not_a_squeezer_artifact(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ArtifactError, match="not a squeezer artifact"):
        inspect(path)


@pytest.mark.parametrize("where", ["header", "record", "layer", "state", "safetensors"])
def test_unknown_metadata_field(artifact: Path, where: str) -> None:
    doc, tensors = read_raw(artifact)
    header: dict[str, Any] = {}
    match = "unknown field.*(compression_level|zero_point)"
    if where == "header":
        header["compression_level"] = 9
    elif where == "record":
        doc["compression_level"] = 9
    elif where == "layer":
        doc["layers"][0]["zero_point"] = 0
    elif where == "state":
        doc["state"][0]["zero_point"] = 0
    rewrite(artifact, doc, tensors, rehash=True, header=header)
    if where == "safetensors":
        top, _ = file_header(artifact)
        data = fmt.pack_data(doc, tensors.values())
        artifact.write_bytes(fmt.container(data, top, extra={"other": "x"}))
        match = "unknown metadata key"
    with pytest.raises(ArtifactError, match=match):
        load(artifact, make_model())


def test_malformed_metadata(artifact: Path) -> None:
    save_file({"data": torch.zeros(4, dtype=torch.uint8)}, str(artifact), metadata={fmt.METADATA_KEY: "{not json"})
    with pytest.raises(ArtifactError, match=r"model\.safetensors"):
        inspect(artifact)


class _SideEffect:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_pickle_renamed_is_rejected_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"weights": _SideEffect(marker)}))
    with pytest.raises(ArtifactError, match=r"evil\.safetensors: not a readable safetensors artifact"):
        load(evil, make_model())
    assert not marker.exists()
    saved = tmp_path / "torch.safetensors"
    torch.save(make_model().state_dict(), saved)  # a zip holding a pickle
    with pytest.raises(ArtifactError, match=r"torch\.safetensors"):
        inspect(saved)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such artifact file"):
        inspect(tmp_path / "nope.safetensors")


# --- writing ---------------------------------------------------------------------------------


def test_failed_replace_leaves_previous_file_intact(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = artifact.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ArtifactError, match=r"cannot write artifact.*disk on fire"):
        export(compressed(2, seed=5), artifact)
    assert artifact.read_bytes() == before
    assert os.listdir(artifact.parent) == [artifact.name]  # no temp file left behind


def test_failed_write_leaves_previous_file_intact(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = artifact.read_bytes()
    real_fsync = os.fsync

    def broken_fsync(fd: int) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(ArtifactError, match="no space left"):
        export(compressed(2, seed=5), artifact)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert artifact.read_bytes() == before
    assert os.listdir(artifact.parent) == [artifact.name]


def test_unwritable_directory_leaves_previous_file_intact(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = artifact.read_bytes()

    def no_temp_file(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", no_temp_file)  # what a read-only directory does
    with pytest.raises(ArtifactError, match=r"cannot write artifact.*Permission denied"):
        export(compressed(2, seed=5), artifact)
    assert artifact.read_bytes() == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(artifact: Path) -> None:
    before = artifact.read_bytes()
    artifact.parent.chmod(0o555)
    try:
        with pytest.raises(ArtifactError, match="cannot write artifact"):
            export(compressed(2, seed=5), artifact)
    finally:
        artifact.parent.chmod(0o755)
    assert artifact.read_bytes() == before


def test_bad_export_options(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="float_dtype"):
        export(compressed(), tmp_path / "m.safetensors", float_dtype="int8")
    with pytest.raises(ArtifactError, match="JSON"):
        export(compressed(), tmp_path / "m.safetensors", info={"x": object()})
    assert not (tmp_path / "m.safetensors").exists()


def test_quantizer_breaking_its_contract_is_caught(tmp_path: Path) -> None:
    model = compressed(3)
    q: Any = dict(sc.compressed_weights(model))["4.weight"].quantizer
    honest = q.quantize

    def forward(w: torch.Tensor) -> torch.Tensor:
        codes, scale = honest(w)
        return codes * scale

    q.forward = forward
    q.quantize = lambda w: (honest(w)[0], honest(w)[1] * 1.5)  # scales that do not match forward
    with pytest.raises(PluginError, match="differ from the quantizer's output"):
        export(model, tmp_path / "m.safetensors")


# --- size ----------------------------------------------------------------------------------------


def test_sparse_two_bit_layer_is_near_its_information_bound(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(400, 250))  # 100k weights
    sc.attach(model)
    sc.prune(model, lambda p, w: torch.rand_like(w), 0.95)
    sc.attach_quantizers(model, lambda path: ("testq", RoundQuant(2)))
    report = export(model, tmp_path / "m.safetensors")
    layer = report.layers[0]
    assert (layer.numel, layer.nnz, layer.bits) == (100_000, 5_000, 2)
    # codes + mask + scales within 10% of nnz * b + n * H(d) plus the scales
    assert layer.bytes <= 1.10 * (layer.bound_bytes + layer.scale_bytes)
    assert layer.ratio < 1.10
    assert report.ratio < 1.10  # with the bias, stored as is
    assert layer.mask_bytes * 8 <= 1.10 * layer.mask_bound_bits
    dense = torch_save_size(model)
    assert report.file_bytes * 10 < dense
    assert report.file_bytes * 30 < torch_save_size(sc.bake(model))
