"""The version-2 record, crafted as an attacker would (who can recompute the digest): a zlib bomb,
a truncated or foreign stream, JSON that could mean two things, parts that do not fill the blob.
Each is one ArtifactError naming the file, before any part is sliced or decoded."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from test_artifact import compressed, make_model, read_raw

from squeezer.artifact import export, inspect, load, load_state_dict
from squeezer.artifact import format as fmt
from squeezer.errors import ArtifactError


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    export(compressed(), path, info={"recipe": "demo"})
    return path


def _write(path: Path, data: bytes) -> None:
    """``data`` as the blob, with a correct digest: only the check under test can object."""
    header = {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, "sha256": fmt.digest(data)}
    path.write_bytes(fmt.container(data, header))


def _refused(path: Path, needle: str) -> None:
    for consumer in (inspect, load_state_dict, lambda p: load(p, make_model())):
        with pytest.raises(ArtifactError) as exc:
            consumer(path)
        message = str(exc.value)
        assert message.startswith(f"{path}: ") and "\n" not in message and needle in message, message


def _compress(text: bytes, zdict: bytes | None = fmt.ZDICT) -> bytes:
    if zdict is None:
        return zlib.compress(text, 9)
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY, zdict)
    return packer.compress(text) + packer.flush()


def test_a_zlib_bomb_is_refused_within_the_record_limit(artifact: Path) -> None:
    """17 MiB of spaces compress to ~17 KB; the reader inflates at most MAX_RECORD_BYTES + 1."""
    bomb = _compress(b"{" + b" " * (fmt.MAX_RECORD_BYTES + 1) + b"}")
    assert len(bomb) < 100_000
    _write(artifact, bomb)
    _refused(artifact, "inflates to more than 16,777,216 bytes")


@pytest.mark.parametrize(("data", "needle"), [
    (b"", "truncated"),
    (b"not zlib at all", "not a valid zlib stream"),
    (_compress(b'{"float_dtype":"float32"}')[:-3], "truncated"),
    (_compress(b"{}", b"another dictionary"), "not a valid zlib stream"),  # zlib checks the dictionary's id
    (_compress(b"[1, 2", None), "Expecting ',' delimiter"),
    (_compress(b"\xff\xfe{}"), "not UTF-8 JSON"),
    (_compress(b"{not json"), "Expecting property name"),
    (_compress(b"[]"), "record must be a JSON object"),
    (_compress(b"[" * 1_000_000), "nests too deeply"),  # a RecursionError in json, not an ArtifactError, before
])
def test_a_malformed_record_is_refused(artifact: Path, data: bytes, needle: str) -> None:
    _write(artifact, data)
    _refused(artifact, needle)


def test_a_record_naming_a_key_twice_is_refused(artifact: Path) -> None:
    """Parsers disagree on duplicate keys (first or last wins): a file that could mean two things."""
    doc, tensors = read_raw(artifact)
    text = fmt.canonical(doc)
    twice = text[:-1] + b',"float_dtype":"float16"}'
    _write(artifact, _compress(twice) + fmt.pack_data(doc, tensors.values())[len(fmt.compress_record(doc)):])
    _refused(artifact, "names a key twice")


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda doc, t: t.__setitem__("layer/4.weight/codes", t["layer/4.weight/codes"][:-1]), "bytes of parts"),
    (lambda doc, t: t.__setitem__("state/extra", torch.zeros(1)), "bytes of parts"),
    (lambda doc, t: doc["layers"][1].update(mask_bytes=doc["layers"][1]["mask_bytes"] + 1), "bytes of parts"),
    (lambda doc, t: doc["layers"][1].update(nnz=doc["layers"][1]["nnz"] + 8), "bytes of parts"),
    (lambda doc, t: doc["layers"][1].update(scale_shape=[3, 1]), "scale of shape (3, 1) does not fit (10, 144)"),
    (lambda doc, t: doc["layers"][1].update(scale_dtype="int32"), "scale must be a floating tensor"),
    (lambda doc, t: doc["layers"][1].update(mask_coding="bitmap", mask_rice_k=None), "a bitmap mask of 1,440"),
    (lambda doc, t: doc["layers"][1].update(mask_bytes=-1), "mask_bytes must be a non-negative integer"),
    (lambda doc, t: doc["layers"][1].update(bits=17), "bits in 1..16"),
    (lambda doc, t: doc["layers"][1].update(encoding="float"), "a float layer has no scale"),
    (lambda doc, t: doc["state"][0].update(shape=[1 << 40]), "bytes of parts"),
    (lambda doc, t: doc["state"][0].update(dtype="complex64"), "is not supported"),
    (lambda doc, t: doc["state"].append(dict(doc["state"][0])), "names some tensor twice"),
])
def test_parts_must_fill_the_blob_exactly(artifact: Path, edit: Any, needle: str) -> None:
    """Checked from the record alone, before a part is sliced: a claim of 2**40 floats allocates nothing."""
    doc, tensors = read_raw(artifact)
    edit(doc, tensors)
    _write(artifact, fmt.pack_data(doc, tensors.values()))
    _refused(artifact, needle)


@pytest.mark.parametrize(("header", "needle"), [
    ({"sha256": "00" * 31}, "64 lowercase hex digits"),
    ({"sha256": "AB" * 32}, "64 lowercase hex digits"),
    ({"sha256": None}, "64 lowercase hex digits"),
    ({"version": "2"}, "artifact format version 2 is not supported"),  # a string is not the version
    ({"format": "squeezer-checkpoint"}, "not a squeezer-artifact file"),
])
def test_a_malformed_header_is_refused(artifact: Path, header: dict[str, Any], needle: str) -> None:
    doc, tensors = read_raw(artifact)
    data = fmt.pack_data(doc, tensors.values())
    top = {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, "sha256": fmt.digest(data), **header}
    artifact.write_bytes(fmt.container(data, top))
    _refused(artifact, needle)


def test_the_blob_must_be_one_uint8_tensor(artifact: Path) -> None:
    doc, tensors = read_raw(artifact)
    data = fmt.pack_data(doc, tensors.values())
    data += b"\0" * (-len(data) % 4)
    floats = torch.frombuffer(bytearray(data), dtype=torch.float32)
    header = {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, "sha256": fmt.digest(data)}
    save_file({"data": floats}, str(artifact), metadata={fmt.METADATA_KEY: json.dumps(header)})
    _refused(artifact, "one 1-d uint8 tensor 'data'")


def test_a_bool_state_entry_reads_as_bool(tmp_path: Path) -> None:
    """Any nonzero byte of a bool part is True: no invalid bool reaches torch."""
    model = compressed()
    model.register_buffer("flag", torch.tensor([True, False]))
    path = tmp_path / "m.safetensors"
    export(model, path)
    doc, tensors = read_raw(path)
    tensors["state/flag"] = torch.tensor([7, 0], dtype=torch.uint8)
    _write(path, fmt.pack_data(doc, tensors.values()))
    assert load_state_dict(path)["flag"].tolist() == [True, False]


def test_deeply_nested_metadata_is_refused(artifact: Path) -> None:
    save_file({"data": torch.zeros(4, dtype=torch.uint8)}, str(artifact),
              metadata={fmt.METADATA_KEY: "[" * 100_000})
    _refused(artifact, "the metadata nests too deeply")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["layer0", "layer1", "state", "record"]), data=st.data())
def test_any_field_set_to_any_json_is_an_artifact_error_or_loads(artifact: Path, where: str,
                                                                 data: st.DataObject) -> None:
    """A record edited anywhere, to anything JSON can say, digest recomputed: the consumers raise
    ArtifactError (never TypeError, KeyError, IndexError, ...) or read a consistent file."""
    doc, tensors = read_raw(artifact)
    target = {"layer0": doc["layers"][0], "layer1": doc["layers"][1], "state": doc["state"][0], "record": doc}[where]
    field = data.draw(st.sampled_from(sorted(target)), label="field")
    target[field] = data.draw(JSON_VALUES, label="value")
    path = artifact.with_name("edited.safetensors")
    _write(path, fmt.pack_data(doc, tensors.values()))
    for consumer in (inspect, load_state_dict, lambda p: load(p, make_model())):
        try:
            consumer(path)
        except ArtifactError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_part_replaced_by_any_bytes_is_an_artifact_error_or_loads(artifact: Path, data: st.DataObject) -> None:
    """A mask, codes, scale or state part replaced by random bytes (same length or not), digest
    recomputed: ArtifactError naming the file, or a file that reads."""
    doc, tensors = read_raw(artifact)
    name = data.draw(st.sampled_from(sorted(tensors)), label="part")
    size = tensors[name].numel() * tensors[name].element_size()
    raw = data.draw(st.binary(min_size=max(size - 2, 0), max_size=size + 2), label="bytes")
    tensors[name] = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    path = artifact.with_name("edited.safetensors")
    _write(path, fmt.pack_data(doc, tensors.values()))
    for consumer in (inspect, load_state_dict, lambda p: load(p, make_model())):
        try:
            consumer(path)
        except ArtifactError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
