"""SqueezerCallback under Lightning's DDP strategy: 2 CPU processes (gloo) on loopback, bounded in time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")

import torch

import squeezer

SCRIPT = Path(__file__).with_name("lightning_ddp_script.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lightning_ddp")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1")
    env.pop("LOCAL_RANK", None)  # Lightning launches the ranks itself
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPT.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_reaches_the_target_with_identical_masks_and_weights_on_both_ranks(run: Path) -> None:
    rank0 = json.loads((run / "rank0.json").read_text())
    rank1 = json.loads((run / "rank1.json").read_text())
    assert rank0["world_size"] == 2
    assert rank0["steps"] == 12 and rank0["rounds"] == 2  # 4 steps per epoch per rank, 3 epochs
    assert rank0["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert rank0["bits"] == [4]
    assert rank0["optimizer_holds_all"]  # the step sizes joined the optimizer after DDP wrapped the model
    assert len(rank0["masks"]) == 3
    assert rank0["masks"] == rank1["masks"]
    # every rank saw different batches: equal weights (step sizes included) mean the gradients of the
    # parameters DDP was built without were averaged too
    assert rank0["weights"] == rank1["weights"]
    assert rank0 == rank1


def test_artifact_written_by_rank_zero_reloads_with_identical_predictions(run: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from lightning_ddp_script import data, make_net
    finally:
        sys.path.remove(str(SCRIPT.parent))
    fresh = squeezer.load(run / "model.safetensors", make_net()).eval()
    expected = torch.load(run / "predictions.pt")
    with torch.no_grad():
        got = fresh(data().tensors[0])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
