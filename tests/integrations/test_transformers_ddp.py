"""SqueezerTrainerCallback in a HF Trainer under DDP: 2 CPU processes (gloo) on loopback, bounded in time.

The worker (transformers_ddp_script.py) runs four trainings per rank: Phase 1 with a plain
``Trainer``, and Phase 1 plus PQK's Phase 2 with ``SqueezerTrainer(mutual=True)``, each with the
Trainer's default gradient clipping (``max_grad_norm=1.0``) and without (``max_grad_norm=0``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the HF Trainer needs it
pytest.importorskip("safetensors")

import torch
from safetensors.torch import load_file

import squeezer

SCRIPT = Path(__file__).with_name("transformers_ddp_script.py")
WORLD = 2
N_SAMPLES, PER_RANK_EPOCH = 64, 32  # 64 samples, batch 8 per rank: 4 steps (32 samples) per rank and epoch

# With clipping, the gradients of parameters created during training (LSQ steps, the teacher's
# copies) must be averaged across ranks before the Trainer clips: its clip factor is computed from
# every gradient, so a rank-local step gradient would scale each rank's DDP-averaged gradients
# differently and the weights would drift apart.
RUNS = ["phase1", "mutual", "phase1_noclip", "mutual_noclip"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(out: Path) -> None:
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(WORLD),
                LOCAL_WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", SQUEEZER_DISABLE_PLUGIN_AUTOLOAD="1")
    for key in [k for k in base if k.startswith("ACCELERATE_")]:
        base.pop(key)  # an accelerate launch config in the environment would change the set-up
    base["PYTHONPATH"] = os.pathsep.join([str(SCRIPT.parent), base.get("PYTHONPATH", "")])
    logs = [(out / f"rank{r}.log").open("w") for r in range(WORLD)]
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(out)], env=dict(base, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=logs[r], stderr=subprocess.STDOUT, cwd=out)
             for r in range(WORLD)]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:  # a rank that died leaves the other waiting in a collective
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    for r, code in enumerate(codes):
        assert code == 0, f"rank {r} exited with {code}:\n" + (out / f"rank{r}.log").read_text()[-3000:]
    (out / "done").touch()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp("transformers_ddp")
        _launch(out)
        return out
    # under pytest-xdist every worker that gets one of these tests needs the run: the first launches
    # it, the others wait for it (the parent of the basetemp is this session's, shared by the workers)
    from filelock import FileLock

    out = tmp_path_factory.getbasetemp().parent / "transformers_ddp"
    with FileLock(str(out) + ".lock"):
        if not (out / "done").exists():
            out.mkdir(exist_ok=True)
            _launch(out)
    return out


def _reports(run: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    r0, r1 = (json.loads((run / f"{name}_rank{r}.json").read_text()) for r in range(WORLD))
    return r0, r1


def _tensors(run: Path, name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    t0, t1 = (load_file(str(run / f"{name}_rank{r}.safetensors")) for r in range(WORLD))
    assert t0.keys() == t1.keys()
    return t0, t1


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: list[str]) -> list[str]:
    return [k for k in keys if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("name", RUNS)
def test_ddp_on_gloo_with_disjoint_shards(run: Path, name: str) -> None:
    r0, r1 = _reports(run, name)
    for r in (r0, r1):
        assert r["world_size"] == WORLD and r["backend"] == "gloo" and r["wrapped"] == "DistributedDataParallel"
        assert r["broadcast_buffers"]  # DDP copies rank 0's buffers (the masks too) before each forward
    epochs = r0["global_step"] // 4
    assert len(r0["seen"]) == len(r1["seen"]) == epochs * PER_RANK_EPOCH
    for e in range(epochs):  # every epoch the ranks train on complementary halves of the data
        a = set(r0["seen"][e * PER_RANK_EPOCH:(e + 1) * PER_RANK_EPOCH])
        b = set(r1["seen"][e * PER_RANK_EPOCH:(e + 1) * PER_RANK_EPOCH])
        assert not a & b and a | b == set(range(N_SAMPLES))


@pytest.mark.parametrize("name", RUNS)
def test_masks_and_step_sizes_identical_target_and_bits_reached(run: Path, name: str) -> None:
    r0, r1 = _reports(run, name)
    t0, t1 = _tensors(run, name)
    mutual = name.startswith("mutual")
    n_masks = 2 * 6 + (1 if mutual else 2)  # 6 Linear per layer, pooler (and classifier: Phase 1 only)
    assert r0["steps"] == r0["global_step"] == (16 if mutual else 12)  # 4 steps per epoch per rank
    assert r0["rounds"] == 2 and r0["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert len(r0["masks"]) == n_masks and set(r0["bits"]) == set(r0["masks"])
    assert set(r0["bits"].values()) == {4}
    assert r0["optimizer_holds_all"]  # step sizes (and teacher copies) joined the optimizer after DDP wrapped
    # identical masks (DDP's broadcast_buffers also copies rank 0's masks to rank 1 before each forward)
    masks = [f"model/{path.rsplit('.', 1)[0]}.parametrizations.weight.0.mask" for path in r0["masks"]]
    assert set(masks) <= t0.keys()
    assert _differing(t0, t1, masks) == []
    # the LSQ step sizes: created (pending) when the masks were attached, before DDP wrapped the
    # model, so DDP averages their gradients; nothing joins the model later
    steps = [k for k in t0 if k.endswith(".quantizer.step")]
    assert r0["added"] == r1["added"] == [] and len(steps) == n_masks
    assert _differing(t0, t1, steps) == []
    same = ("world_size", "backend", "wrapped", "steps", "global_step", "rounds", "sparsity", "bits", "masks",
            "added", "optimizer_holds_all", "kd_weights", "broadcast_buffers")
    assert {k: r0[k] for k in same} == {k: r1[k] for k in same}


@pytest.mark.parametrize("name", RUNS)
def test_every_parameter_and_buffer_identical_on_both_ranks(run: Path, name: str) -> None:
    t0, t1 = _tensors(run, name)
    if name.startswith("mutual"):
        teacher = [k for k in t0 if k.startswith("teacher/params.")]
        assert teacher and any("LayerNorm" in k for k in teacher)
        assert _differing(t0, t1, teacher) == []  # the teacher's private norm copies
    assert _differing(t0, t1, sorted(t0)) == []


@pytest.mark.parametrize("name", ["mutual", "mutual_noclip"])
def test_phase2_teacher_averaged_and_pruned_entries_stay_zero(run: Path, name: str) -> None:
    r0, r1 = _reports(run, name)
    t0, _ = _tensors(run, name)
    assert r0["kd_weights"] == [0.0, 0.0, 0.0, 1.0]  # epoch 2: Phase 2's warm-up; 3: mutual distillation
    teacher = [k for k in t0 if k.startswith("teacher/params.")]
    assert len(teacher) == 2 * 5  # its private LayerNorm copies (weight, bias): embeddings + 2 per layer
    for r in (r0, r1):
        assert r["masks_frozen"]
        assert r["pruned_nonzero"] == 0  # the student's pruned entries stay exactly 0
        assert r["teacher_changed_pruned"] > 0  # the teacher trained the pruned-away entries


@pytest.mark.parametrize("name", RUNS)
def test_artifact_written_by_rank_zero_reloads_with_identical_predictions(run: Path, name: str) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from transformers_ddp_script import Tokens, tiny_bert
    finally:
        sys.path.remove(str(SCRIPT.parent))
    fresh = squeezer.load(run / f"{name}.artifact.safetensors", tiny_bert()).eval()
    expected = load_file(str(run / f"{name}.logits.safetensors"))["logits"]
    with torch.no_grad():
        got = fresh(input_ids=Tokens().ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
