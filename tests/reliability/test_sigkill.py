"""SIGKILL at several moments of a real run (a subprocess), then resume: the last checkpoint is intact
and the resumed run reproduces the uninterrupted one bit for bit.

One chain of processes on one output directory: killed inside its 3rd checkpoint write (between
fsync and rename), then resumed and killed at a random moment after its first checkpoint, then
resumed to the end. The uninterrupted reference runs alongside in its own process. Every
process is bounded by a timeout and killed if the test fails.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from squeezer.pipeline import checkpoint
from squeezer.pipeline.loop import CHECKPOINT as CKPT  # checkpoints/last.safetensors

HERE = Path(__file__).resolve().parent
TIMEOUT = 120.0

RECIPE = """
seed = 11
[model]
factory = "squeezer.examples.digits:make_model"
width = 4
[data]
factory = "helpers:loaders"  # synthetic 1x8x8 images: no scikit-learn import in every process
n = 640
batch_size = 128
[[stages]]
type = "train"
epochs = 2
[[stages]]
type = "prune"
scheduler = { name = "geometric", target = 0.7, rounds = 2 }
quantizer = { name = "lsq", bits = 4 }
epochs_per_round = 1
[[stages]]
type = "mutual"
warmup_epochs = 1
epochs = 1
"""  # checkpoints: 1 mid train, 2 after it, 3 between pruning rounds, 4 after Phase 1, 5 mid Phase 2, 6 at the end


class Child:
    """``python -c 'import squeezer; squeezer.run(...)'`` (via helpers.child), its stdout read by a thread."""

    def __init__(self, recipe: Path, out: Path, *, resume: bool, step_delay: float = 0.0,
                 kill_in_replace: int = 0) -> None:
        code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import helpers; "
                f"helpers.child({str(recipe)!r}, {str(out)!r}, {resume}, {step_delay}, {kill_in_replace})")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SQUEEZER_DISABLE_PLUGIN_AUTOLOAD": "1"}
        self.err = out.with_name(f"{out.name}.{time.monotonic_ns()}.stderr")
        with self.err.open("w") as err:  # a file, not a pipe nobody drains
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=err,
                                         text=True, env=env)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.checkpoints = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def wait_for_checkpoints(self, n: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.checkpoints < n:
            item = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert item is not None, f"exited before checkpoint {n}: {self.stderr()}"
            self.checkpoints += "checkpoint" in item

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=TIMEOUT) == -signal.SIGKILL

    def finish(self) -> int:
        return self.proc.wait(timeout=TIMEOUT)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)


def _intact(out: Path) -> dict[str, Any]:
    """The checkpoint loads (checksum verified) and names a valid position in the recipe."""
    _, meta = checkpoint.load(out / CKPT)
    assert 0 <= meta["stage"] <= 3
    return meta


@pytest.mark.slow
def test_sigkill_at_several_moments_then_resume_reproduces_the_run(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    out, reference = tmp_path / "killed", tmp_path / "reference"
    children: list[Child] = []
    try:
        ref = Child(recipe, reference, resume=False)
        children.append(ref)
        positions = []

        # 1. killed inside its 3rd checkpoint write: temp file complete and fsynced, not yet renamed
        a = Child(recipe, out, resume=False, kill_in_replace=3)
        children.append(a)
        assert a.finish() == -signal.SIGKILL, a.stderr()
        assert list((out / "checkpoints").glob(".last.safetensors.*.tmp"))  # the orphan the kill left
        positions.append(_intact(out))  # the 2nd checkpoint, untouched

        # 2. resumed, then killed at a random moment after its first checkpoint (possibly mid-write)
        delay = random.Random().uniform(0.0, 0.5)
        b = Child(recipe, out, resume=True, step_delay=0.05)  # >= 0.75 s of steps left after its 1st checkpoint
        children.append(b)
        b.wait_for_checkpoints(1)
        time.sleep(delay)
        b.kill()
        positions.append(_intact(out))

        # 3. resumed to the end
        c = Child(recipe, out, resume=True)
        children.append(c)
        assert c.finish() == 0, c.stderr()
        assert ref.finish() == 0, ref.stderr()
    finally:
        for child in children:
            child.close()

    assert (positions[0]["stage"], positions[0]["epoch"]) == (1, 0), positions
    assert (positions[1]["stage"], positions[1]["epoch"]) >= (1, 1), positions
    assert not list((out / "checkpoints").glob("*.tmp")), "temporary files left behind"
    expected, got = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), f"{key} differs (random kill after {delay:.3f} s)"
