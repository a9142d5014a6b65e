"""DDP with gloo on CPU: 2 ranks (spawned by torchrun on loopback, bounded in time) against 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from squeezer.artifact.reader import load_state_dict

SUPPORT = Path(__file__).with_name("ddp_support.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT.parent), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(
    out: Path, dump: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(SUPPORT), str(out), str(dump), "32", *extra]
    return subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The PQK recipe with LSQ on 2 ranks."""
    base = tmp_path_factory.mktemp("ddp")
    ddp = _torchrun(base / "ddp", base / "ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return base, base / "ddp"


@pytest.fixture(scope="module")
def fp_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Prune + Phase 2 without quantizer, plain SGD: 1 process (global batch 64) and 2 ranks (32 each)."""
    base = tmp_path_factory.mktemp("ddp_fp")
    env = _env() | {"DDP_TEST_FP": "1"}
    single = subprocess.run([sys.executable, str(SUPPORT), str(base / "single"), str(base / "single"), "64"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = _torchrun(base / "ddp", base / "ddp", env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return base / "single", base / "ddp"


def test_masks_and_steps_identical_on_every_rank_after_every_stage(runs: tuple[Path, Path]) -> None:
    _, ddp = runs
    rank0 = json.loads(Path(f"{ddp}.rank0.json").read_text())
    rank1 = json.loads(Path(f"{ddp}.rank1.json").read_text())
    assert len(rank0) == 3
    assert rank0 == rank1


def test_two_ranks_equal_one_process_on_the_same_global_batches(fp_runs: tuple[Path, Path]) -> None:
    single, ddp = fp_runs
    # the decoded weights (the file's one blob holds float scales, which DDP's reduction order moves
    # in the last bits)
    a = load_state_dict(single / "model.safetensors")
    b = load_state_dict(ddp / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key
    single_masks = json.loads(Path(f"{single}.rank0.json").read_text())
    ddp_masks = json.loads(Path(f"{ddp}.rank0.json").read_text())
    for s, d in zip(single_masks, ddp_masks, strict=True):
        masks = {k: v for k, v in s.items() if k.endswith(":mask")}
        assert masks == {k: v for k, v in d.items() if k.endswith(":mask")}


def test_a_killed_rank_leaves_the_checkpoint_intact_and_resume_continues(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    env = _env() | {"DDP_TEST_KILL_AFTER_STAGE": "0"}
    crashed = _torchrun(tmp_path / "out", tmp_path / "dump", env=env)
    assert crashed.returncode != 0
    from squeezer.pipeline import checkpoint

    _, meta = checkpoint.load(tmp_path / "out" / "checkpoints" / "last.safetensors")
    assert meta["stage"] == 1 and meta["epoch"] == 0
    resumed = _torchrun(tmp_path / "out", tmp_path / "dump", "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_state_dict(runs[1] / "model.safetensors")
    b = load_state_dict(tmp_path / "out" / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
