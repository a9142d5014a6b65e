"""Files crafted by an attacker (who can recompute every checksum): claimed sizes, sparse files,
unsupported dtypes, wrongly typed checkpoint metadata and non-regular files are refused with one
ArtifactError line naming the file, before anything the file claims is allocated or read."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from typer.testing import CliRunner

import squeezer
from squeezer import ArtifactError
from squeezer.artifact import format as fmt
from squeezer.artifact import inspect, load_state_dict
from squeezer.artifact.reader import read as read_artifact
from squeezer.cli import app
from squeezer.pipeline import checkpoint
from squeezer.pipeline.loop import CHECKPOINT as CKPT  # checkpoints/last.safetensors
from squeezer.recipe import parse_recipe

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from helpers import TRAIN_PRUNE_LSQ as RECIPE  # noqa: E402

GiB = 1 << 30


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    squeezer.run(parse_recipe(RECIPE), out=out)
    return out


@pytest.fixture()
def run_copy(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run without its artifact (as if killed before the export)."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    (out / "model.safetensors").unlink()
    return out


@pytest.fixture()
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


# --- crafting files as an attacker would ---------------------------------------------------------


def raw_header(path: Path) -> tuple[dict[str, Any], bytes]:
    """The safetensors JSON header of ``path`` and its data section, parsed by hand."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def write_raw(path: Path, header: dict[str, Any], data: bytes = b"", *, length: int | None = None) -> None:
    """A hand-written safetensors file (``length`` overrides the header length field)."""
    text = json.dumps(header).encode()
    path.write_bytes((len(text) if length is None else length).to_bytes(8, "little") + text + data)


def checkpoint_doc(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    header, _ = raw_header(path)
    return json.loads(header["__metadata__"]["squeezer"]), st_load(path.read_bytes())


def write_checkpoint(path: Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write a checkpoint with its SHA-256 recomputed by the project's own digest."""
    doc["sha256"] = checkpoint._digest(doc, tensors)
    path.write_bytes(st_save(tensors, metadata={"squeezer": json.dumps(doc)}))


def artifact_doc(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The record and the parts (``layer/<path>/<part>``, ``state/<name>``) of a valid artifact."""
    art = read_artifact(path)
    return {k: v for k, v in art.meta.items() if k not in ("format", "version")}, dict(art.tensors)


def by_hand_digest(doc: dict[str, Any], tensors: dict[str, torch.Tensor], skip: str, dtype_prefix: str = "") -> str:
    """The digest algorithm of both formats written out, for dtypes the project's functions refuse."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in doc.items() if k != skip}, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        dtype = dtype_prefix + str(t.dtype).removeprefix("torch.")
        h.update(f"\0{name}\0{dtype}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_artifact(path: Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """The record and parts (in their order) as one blob, its digest recomputed by the project's code."""
    path.write_bytes(fmt.encode(doc, tensors.values()))


def huge_layer(src: Path, dst: Path, shape: list[int]) -> None:
    """An artifact whose first layer claims ``shape`` with nothing kept: an empty Rice-coded mask
    and no values, so the file stays ~10 KB and is consistent with its own tensors."""
    doc, tensors = artifact_doc(src)
    layer = doc["layers"][0]
    p = layer["path"]
    for part in ("codes", "scale"):
        tensors.pop(fmt.layer_key(p, part), None)
    tensors[fmt.layer_key(p, "mask")] = torch.zeros(0, dtype=torch.uint8)  # in place: the parts keep their order
    numel = 1
    for d in shape:
        numel *= d
    layer.update(shape=shape, numel=numel, nnz=0, encoding="float", bits=None, signed=None, qn=None, qp=None,
                 offset=None, mask_coding="rice", mask_rice_k=0, mask_inverted=False, mask_bytes=0,
                 scale_shape=None, scale_dtype=None, quantizer=None)
    write_artifact(dst, doc, tensors)


def one_line(exc: pytest.ExceptionInfo[ArtifactError], path: Path, *needles: str) -> str:
    message = str(exc.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def cli_refuses(args: list[Any], path: Path, *needles: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="measures memory in /proc (Linux)")
AS_LIMIT = 3 * GiB // 2  # importing torch and squeezer takes ~0.65 GiB of address space


def bounded(code: str, timeout: float = 180) -> dict[str, Any]:
    """Run ``code`` in a child limited to :data:`AS_LIMIT` of address space; report what it raised
    (``error``, ``message``) and its peak RSS (``maxrss``, bytes). ``load(path, model)`` of a huge
    claim is tested only here: before the fix it touched > 10 GiB."""
    script = textwrap.dedent("""\
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        sys.path.insert(0, {here!r})
        out = {{"error": None}}
        try:
        {body}
        except BaseException as e:
            out.update(error=type(e).__name__, message=str(e))
        with open("/proc/self/status") as f:  # VmHWM: ru_maxrss would include the parent's peak before exec
            out["maxrss"] = 1024 * int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
        print(json.dumps(out))
        """).format(limit=AS_LIMIT, here=str(HERE), body=textwrap.indent(textwrap.dedent(code), "    "))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (a blocking open() of a FIFO is interrupted by the alarm)."""
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- 2: an artifact claiming huge layers --------------------------------------------------------


@pytest.mark.parametrize("log2", [31, 40])
def test_an_artifact_claiming_a_huge_layer_is_refused_before_allocating(finished: Path, tmp_path: Path,
                                                                        log2: int) -> None:
    path = tmp_path / "model.safetensors"
    huge_layer(finished / "model.safetensors", path, [1 << (log2 - log2 // 2), 1 << (log2 // 2)])
    assert path.stat().st_size < 20_000
    with pytest.raises(ArtifactError) as exc:
        load_state_dict(path)
    one_line(exc, path, "1.weight", "without a model")
    report = inspect(path)  # reports the claim; allocates nothing for it
    assert report.layers[0].numel == 1 << log2


@needs_proc
def test_huge_claims_stay_within_a_memory_bound(finished: Path, tmp_path: Path) -> None:
    """In a child limited to 1.5 GiB of address space: load_state_dict, load(path, model) and
    inspect of a 10 KB file claiming 2**31 weights (8 GiB of float32) refuse or report it, and
    the peak RSS stays far below the claim (before: 2.4 GiB peak or a raw MemoryError)."""
    path = tmp_path / "model.safetensors"
    huge_layer(finished / "model.safetensors", path, [1 << 16, 1 << 15])
    for call in ("squeezer.artifact.load_state_dict(p)", "squeezer.load(p, helpers.tiny())"):
        got = bounded(f"""
            import helpers, squeezer, squeezer.artifact
            p = {str(path)!r}
            {call}
            """)
        assert got["error"] == "ArtifactError" and got["message"].startswith(str(path)), got
        assert got["maxrss"] < GiB, got
    got = bounded(f"""
        import squeezer
        out["numel"] = squeezer.inspect({str(path)!r}).layers[0].numel
        """)
    assert got["error"] is None and got["numel"] == 1 << 31 and got["maxrss"] < GiB, got


def test_a_layer_beyond_any_real_size_is_refused_by_the_schema(finished: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    huge_layer(finished / "model.safetensors", path, [1 << 30, 1 << 30])
    with pytest.raises(ArtifactError) as exc:
        inspect(path)
    one_line(exc, path, "layers[0]", "more than")


def _drop(tensors: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    tensors[key] = value


@pytest.mark.parametrize(("edit", "needle"), [
    # a bitmap mask must have ceil(numel / 8) bytes
    (lambda doc, t: (doc["layers"][0].update(mask_coding="bitmap", mask_rice_k=None, mask_bytes=3),
                     _drop(t, "layer/1.weight/mask", torch.zeros(3, dtype=torch.uint8))), "bitmap mask"),
    # codes of nnz * bits bits: the parts no longer fill the blob
    (lambda doc, t: _drop(t, "layer/1.weight/codes", torch.zeros(2, dtype=torch.uint8)), "bytes of parts"),
    (lambda doc, t: doc["layers"][0].update(nnz=doc["layers"][0]["nnz"] + 64), "bytes of parts"),
    (lambda doc, t: doc["layers"][0].update(scale_shape=[3, 1]), "scale of shape"),
    (lambda doc, t: doc["layers"][0].update(scale_dtype="int32"), "floating"),
    (lambda doc, t: _drop(t, "state/1.bias", torch.zeros(1 << 10)), "bytes of parts"),
    (lambda doc, t: doc["state"][0].update(shape=[1 << 20, 1 << 20]), "bytes of parts"),
])
def test_sizes_the_metadata_claims_must_match_the_tensors(finished: Path, tmp_path: Path, edit: Any,
                                                          needle: str) -> None:
    """Checked from the record before any part is sliced, so inspect refuses them too (a claim
    of 2**40 floats allocates nothing)."""
    path = tmp_path / "model.safetensors"
    doc, tensors = artifact_doc(finished / "model.safetensors")
    assert doc["layers"][0]["path"] == "1.weight" and doc["layers"][0]["encoding"] == "quantized"
    assert doc["state"][0]["name"] == "1.bias"
    edit(doc, tensors)
    write_artifact(path, doc, tensors)
    for consumer in (inspect, load_state_dict):
        with pytest.raises(ArtifactError) as exc:
            consumer(path)
        one_line(exc, path, needle)


def test_cli_eval_refuses_a_huge_layer(finished: Path, tmp_path: Path, recipe_file: Path) -> None:
    path = tmp_path / "model.safetensors"
    huge_layer(finished / "model.safetensors", path, [1 << 20, 1 << 20])
    cli_refuses(["eval", path, recipe_file], path, "1.weight")


def test_decode_limit_leaves_room_for_real_compression() -> None:
    from squeezer.artifact.reader import decode_limit

    # a 100M-parameter FP32 model at 99.9% sparsity (~3000x): its ~130 KB file decodes within the limit
    assert decode_limit(130_000) > 4 * 100_000_000
    assert decode_limit(10_000) < 4 << 31  # the attack: 10 KB claiming 2**31 weights


# --- 3: the checkpoint reader validates before it reads ----------------------------------------------


@needs_proc
def test_a_sparse_3_gib_checkpoint_is_refused_without_reading_it(finished: Path, tmp_path: Path) -> None:
    """A valid header (small tensors) followed by a 3 GiB hole: refused from the header and the
    file size alone, in a child limited to 1.5 GiB (before: the whole file was read, > 2.5 GiB RSS)."""
    path = tmp_path / "last.safetensors"
    shutil.copyfile(finished / CKPT, path)
    with path.open("r+b") as f:
        f.truncate(3 * GiB)
    got = bounded(f"""
        from squeezer.pipeline import checkpoint
        checkpoint.load({str(path)!r})
        """, timeout=60)
    assert got["error"] == "ArtifactError" and got["message"].startswith(str(path)), got
    assert "3,221,225,472" in got["message"] and got["maxrss"] < GiB, got


def _claiming(path: Path, tensor: str, doc: dict[str, Any], nbytes: int, dtype: str = "F32") -> Path:
    """A sparse file whose header claims one tensor of ``nbytes`` bytes, with ``doc`` as metadata."""
    width = {"F32": 4, "U8": 1}[dtype]
    header = {"__metadata__": {"squeezer": json.dumps(doc)},
              tensor: {"dtype": dtype, "shape": [nbytes // width], "data_offsets": [0, nbytes]}}
    write_raw(path, header)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size + nbytes)
    return path


@needs_proc
def test_a_sparse_file_claiming_2_gib_tensors_is_hashed_in_bounded_memory(finished: Path, tmp_path: Path) -> None:
    """Headers consistent with a 2 GiB hole: the checksum is computed streaming from the file and the
    tensors are never loaded (before: read whole, a raw MemoryError under the limit)."""
    doc, _ = checkpoint_doc(finished / CKPT)
    ckpt = _claiming(tmp_path / "last.safetensors", "model.t", doc, 2 * GiB)
    art_header = {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, "sha256": "0" * 64}
    art = _claiming(tmp_path / "model.safetensors", fmt.DATA_KEY, art_header, 2 * GiB, "U8")
    got = bounded(f"""
        from squeezer.pipeline import checkpoint
        import squeezer
        for call in (lambda: checkpoint.load({str(ckpt)!r}), lambda: squeezer.inspect({str(art)!r})):
            try:
                call()
            except squeezer.ArtifactError as e:
                out.setdefault("refused", []).append(str(e))
        """)
    assert got["error"] is None and len(got["refused"]) == 2, got
    assert all("checksum mismatch" in m for m in got["refused"]) and got["maxrss"] < GiB, got


HEADERS: list[tuple[str, Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes, int | None]], str]] = [
    ("length past the end", lambda h, d: (h, d, len(json.dumps(h)) + len(d) + 1), "truncated"),
    ("length beyond the bound", lambda h, d: (h, d, 1 << 63), "more than"),
    ("overlapping tensors", lambda h, d: ({**h, "x": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, d, None),
     "gap or overlap"),
    ("bytes after the tensors", lambda h, d: (h, d + b"\0" * 16, None), "end at byte"),
    ("shape against offsets",
     lambda h, d: ({**h, "x": {"dtype": "F32", "shape": [5], "data_offsets": [len(d), len(d) + 4]}}, d + b"\0" * 4,
                   None), "bytes for shape"),
    ("negative dimension", lambda h, d: ({**h, "x": {"dtype": "F32", "shape": [-1], "data_offsets": [len(d), len(d)]}},
                                         d, None), "non-negative"),
    ("not an object", lambda h, d: ({**h, "x": [1, 2]}, d, None), "exactly dtype, shape and data_offsets"),
]


@pytest.mark.parametrize(("case", "edit", "needle"), HEADERS, ids=[c[0] for c in HEADERS])
@pytest.mark.parametrize("kind", ["checkpoint", "artifact"])
def test_inconsistent_safetensors_headers(finished: Path, tmp_path: Path, kind: str, case: str, edit: Any,
                                          needle: str) -> None:
    src = finished / (CKPT if kind == "checkpoint" else Path("model.safetensors"))
    header, data = raw_header(src)
    header, data, length = edit(header, data)
    path = tmp_path / src.name
    write_raw(path, header, data, length=length)
    with pytest.raises(ArtifactError) as exc:
        checkpoint.load(path) if kind == "checkpoint" else inspect(path)
    one_line(exc, path, needle)


def test_duplicate_header_keys_are_refused(finished: Path, tmp_path: Path) -> None:
    """JSON parsers disagree on duplicate keys; a file that could mean two things is refused."""
    header, data = raw_header(finished / CKPT)
    name, entry = next((k, v) for k, v in header.items() if k != "__metadata__")
    text = json.dumps(header)[:-1] + f", {json.dumps(name)}: {json.dumps(entry)}}}"
    path = tmp_path / "last.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text.encode() + data)
    with pytest.raises(ArtifactError) as exc:
        checkpoint.load(path)
    one_line(exc, path, "twice")


# --- 4: unsupported dtypes ---------------------------------------------------------------------------


DTYPES = [torch.uint16, torch.float8_e4m3fn, torch.complex64, torch.uint32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_an_unsupported_dtype_in_an_artifact_is_refused(finished: Path, tmp_path: Path, dtype: torch.dtype) -> None:
    """In the record (a state entry) or as the dtype of the blob itself. Before: a raw ValueError
    from the checksum code (API), exit 1 (CLI)."""
    path = tmp_path / "model.safetensors"
    doc, tensors = artifact_doc(finished / "model.safetensors")
    name = str(dtype).removeprefix("torch.")
    doc["state"][0]["dtype"] = name
    write_artifact(path, doc, tensors)
    for consumer in (inspect, load_state_dict):
        with pytest.raises(ArtifactError) as exc:
            consumer(path)
        one_line(exc, path, "record.state[0].dtype", repr(name))
    cli_refuses(["inspect", path], path, "record.state[0].dtype", name)
    data = torch.zeros(16).to(dtype)
    header = {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION,
              "sha256": hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()}
    path.write_bytes(st_save({fmt.DATA_KEY: data}, metadata={fmt.METADATA_KEY: json.dumps(header)}))
    for consumer in (inspect, load_state_dict):
        with pytest.raises(ArtifactError) as exc:
            consumer(path)
        one_line(exc, path, "'data'", name)
    cli_refuses(["inspect", path], path, "'data'", name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_an_unsupported_dtype_in_a_checkpoint_is_refused(run_copy: Path, tmp_path: Path, recipe_file: Path,
                                                         dtype: torch.dtype) -> None:
    path = run_copy / CKPT
    doc, tensors = checkpoint_doc(path)
    tensors["model.1.bias"] = torch.zeros(16).to(dtype)
    doc["sha256"] = by_hand_digest(doc, tensors, "sha256", "torch.")
    path.write_bytes(st_save(tensors, metadata={"squeezer": json.dumps(doc)}))
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ArtifactError) as exc:
        checkpoint.load(path)
    one_line(exc, path, "'model.1.bias'", name)
    cli_refuses(["export", path, "--out", tmp_path / "x.safetensors"], path, name)
    cli_refuses(["run", recipe_file, "--out", run_copy, "--resume", "--quiet"], path, name)


# --- 5: crafted checkpoint metadata ----------------------------------------------------------------


def _meta(edit: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any], dict[str, torch.Tensor]], None]:
    return lambda doc, tensors: edit(doc["meta"])


def _set(field: str, value: Any) -> Callable[[dict[str, Any], dict[str, torch.Tensor]], None]:
    return _meta(lambda m: m.__setitem__(field, value))


def _quantizer(**entry: Any) -> Callable[[dict[str, Any], dict[str, torch.Tensor]], None]:
    return _meta(lambda m: m["spec"]["quantizers"].__setitem__("1.weight", entry))


META_EDITS: list[tuple[str, Callable[[dict[str, Any], dict[str, torch.Tensor]], None], str]] = [
    ("spec string", _set("spec", "1.weight"), "spec must be an object, got string"),
    ("spec list", _set("spec", [["1.weight"]]), "spec must be an object, got array"),
    ("spec fields", _meta(lambda m: m["spec"].pop("quantizers")), "spec must have exactly"),
    ("spec weights", _meta(lambda m: m["spec"].__setitem__("weights", "1.weight")), "spec.weights must be an array"),
    ("spec weight int", _meta(lambda m: m["spec"]["weights"].append(3)), "spec.weights[2] must be a non-empty string"),
    ("spec twice", _meta(lambda m: m["spec"]["weights"].append("1.weight")), "twice"),
    ("quantizer name", _quantizer(name=4, options={}), "spec.quantizers['1.weight'].name"),
    ("quantizer options", _quantizer(name="lsq", options=[4]), "spec.quantizers['1.weight'].options must be an object"),
    ("quantizer fields", _quantizer(name="lsq"), "exactly the fields 'name' and 'options'"),
    ("quantizer unknown weight", _meta(lambda m: m["spec"]["quantizers"].__setitem__(
        "9.weight", {"name": "lsq", "options": {}})), "not one of spec.weights"),
    ("optim_scalars list", _set("optim_scalars", [1, 2]), "optim_scalars must be an object, got array"),
    ("optim_scalars value", _set("optim_scalars", {"model.1.weight.step": [1]}),
     "optim_scalars['model.1.weight.step']"),
    ("stage string", _set("stage", "1"), "stage must be a non-negative integer, got string"),
    ("stage negative", _set("stage", -1), "stage must be a non-negative integer"),
    ("stage past the recipe", _set("stage", 7), "past the recipe's 2 stage(s)"),
    ("mid-stage past the recipe", _meta(lambda m: m.update(stage=2, epoch=1)), "past the recipe"),
    ("epoch float", _set("epoch", 1.5), "epoch must be a non-negative integer, got number"),
    ("step null", _set("step", None), "step must be a non-negative integer, got null"),
    ("step bool", _set("step", True), "step must be a non-negative integer, got boolean"),
    ("records list", _set("records", []), "records must be an object"),
    ("records stage_accuracy", _meta(lambda m: m["records"].__setitem__("stage_accuracy", 3)),
     "records.stage_accuracy"),
    ("records teacher spec", _meta(lambda m: m["records"].__setitem__("kd_teacher_spec", 1)),
     "records.kd_teacher_spec"),
    ("records version", _meta(lambda m: m["records"].__setitem__("version", 2)),
     "records: format version 2, this squeezer reads version 1"),
    ("records unknown field", _meta(lambda m: m["records"].__setitem__("payload", {"factory": "os:system"})),
     "records: unknown field(s) ['payload']"),
    ("recipe string", _set("recipe", "recipe.toml"), "recipe must be an object, got string"),
    ("recipe_hash int", _set("recipe_hash", 5), "recipe_hash must be a SHA-256 hex digest"),
    ("missing field", _meta(lambda m: m.pop("optim_scalars")), "missing field(s) ['optim_scalars']"),
    ("unknown field", _set("command", "rm -rf"), "unknown field(s) ['command']"),
    ("unexpected tensor", lambda doc, t: t.__setitem__("payload", torch.zeros(3)), "unexpected tensor 'payload'"),
    ("bare prefix", lambda doc, t: t.__setitem__("model.", torch.zeros(3)), "unexpected tensor 'model.'"),
    ("optim of nothing", lambda doc, t: t.__setitem__("optim.x", torch.zeros(3)), "unexpected tensor 'optim.x'"),
    ("rng float", lambda doc, t: t.__setitem__("rng", torch.zeros(3)), "'rng' (the random generator state)"),
]


@pytest.mark.parametrize(("case", "edit", "needle"), META_EDITS, ids=[c[0] for c in META_EDITS])
def test_crafted_checkpoint_metadata_is_refused(finished: Path, tmp_path: Path, case: str, edit: Any,
                                                needle: str) -> None:
    """Each edit with the SHA-256 recomputed (the checksum proves integrity, not origin)."""
    doc, tensors = checkpoint_doc(finished / CKPT)
    edit(doc, tensors)
    path = tmp_path / "last.safetensors"
    write_checkpoint(path, doc, tensors)
    with pytest.raises(ArtifactError) as exc:
        checkpoint.load(path)
    one_line(exc, path, "checkpoint metadata: ", needle)


CLI_EDITS = [c for c in META_EDITS if c[0] in {"spec string", "optim_scalars list", "stage string",
                                                 "unexpected tensor", "quantizer options", "records list"}]


@pytest.mark.parametrize(("case", "edit", "needle"), CLI_EDITS, ids=[c[0] for c in CLI_EDITS])
def test_cli_resume_and_export_refuse_crafted_metadata(run_copy: Path, tmp_path: Path, recipe_file: Path,
                                                       case: str, edit: Any, needle: str) -> None:
    """Before: raw TypeError / KeyError / RuntimeError (exit 1 with a traceback)."""
    path = run_copy / CKPT
    doc, tensors = checkpoint_doc(path)
    edit(doc, tensors)
    write_checkpoint(path, doc, tensors)
    before = path.read_bytes()
    cli_refuses(["run", recipe_file, "--out", run_copy, "--resume", "--quiet"], path, needle)
    cli_refuses(["export", run_copy, "--out", tmp_path / "x.safetensors"], path, needle)
    assert path.read_bytes() == before and not (tmp_path / "x.safetensors").exists()
    assert not (run_copy / "model.safetensors").exists()


def test_the_writer_checks_what_it_writes_against_the_same_schema(tmp_path: Path, finished: Path) -> None:
    _, meta = checkpoint.load(finished / CKPT)
    checkpoint.check_meta(meta)  # what a run wrote passes
    with pytest.raises(RuntimeError, match="fails its own schema: spec must be an object"):
        checkpoint.save(tmp_path / "c.safetensors", {"model.w": torch.zeros(2)}, {**meta, "spec": "x"})
    with pytest.raises(RuntimeError, match="unexpected tensor 'w'"):
        checkpoint.save(tmp_path / "c.safetensors", {"w": torch.zeros(2)}, meta)
    assert not (tmp_path / "c.safetensors").exists()


# --- 7: non-regular files ------------------------------------------------------------------------


@pytest.fixture()
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.safetensors"
    os.mkfifo(path)
    return path


def test_a_fifo_is_refused_at_once(fifo: Path, tmp_path: Path) -> None:
    with deadline(10):
        for call in (lambda: checkpoint.load(fifo), lambda: inspect(fifo), lambda: load_state_dict(fifo),
                     lambda: squeezer.load(fifo, __import__("helpers").tiny())):
            with pytest.raises(ArtifactError) as exc:
                call()
            one_line(exc, fifo, "not a regular file (a FIFO)")
        cli_refuses(["export", fifo, "--out", tmp_path / "x.safetensors"], fifo, "FIFO")
        cli_refuses(["inspect", fifo], fifo, "FIFO")


def test_cli_resume_refuses_a_fifo_checkpoint(run_copy: Path, recipe_file: Path) -> None:
    path = run_copy / CKPT
    path.unlink()
    os.mkfifo(path)
    with deadline(10):
        cli_refuses(["run", recipe_file, "--out", run_copy, "--resume", "--quiet"], path, "FIFO")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    for call in (checkpoint.load, inspect):
        with pytest.raises(ArtifactError) as exc:
            call(tmp_path)
        one_line(exc, tmp_path, "is a directory")


@needs_proc
def test_dev_zero_is_refused_without_reading() -> None:
    """Before: the checkpoint reader read /dev/zero until memory ran out (here: a raw MemoryError)."""
    got = bounded("""
        from squeezer.pipeline import checkpoint
        checkpoint.load("/dev/zero")
        """, timeout=60)
    assert got["error"] == "ArtifactError" and "character device" in got["message"], got
    assert got["maxrss"] < GiB, got
