"""Launched by tests/pipeline/test_distributed.py, under torchrun (2 ranks) or alone (1 process).

argv: OUT_DIR DUMP_FILE PER_RANK_BATCH [resume]; env DDP_TEST_FP=1 drops the quantizer and uses plain
SGD, so that two ranks and one process agree to float tolerance (with LSQ, rounding amplifies
reduction-order differences in the last bits into different codes).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader

CREATED: list[nn.Module] = []


def make_model() -> nn.Module:
    # no BatchNorm: SyncBatchNorm needs a GPU, and per-rank batch statistics would differ
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    CREATED.append(model)
    return model


def make_loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    from squeezer.examples.digits import digits_tensors

    train, val = digits_tensors()
    train = torch.utils.data.Subset(train, range(1280))  # divisible by every global batch used
    return DataLoader(train, batch_size=batch_size, shuffle=False), DataLoader(val, batch_size=256)


RECIPE = """
seed = 5
[model]
factory = "ddp_support:make_model"
[data]
factory = "ddp_support:make_loaders"
batch_size = {batch}
[training]
{optim}
[[stages]]
type = "train"
epochs = 2
[[stages]]
type = "prune"
scheduler = {{ name = "geometric", target = 0.8, rounds = 2 }}
{quantizer}epochs_per_round = 1
[[stages]]
type = "mutual"
warmup_epochs = 1
epochs = 1
"""


def fingerprint(model: nn.Module) -> dict[str, object]:
    from squeezer import compress

    out: dict[str, object] = {}
    for path, p in compress.compressed_weights(model):
        out[path + ":mask"] = hashlib.sha256(p.mask.numpy().tobytes()).hexdigest()
        if p.quantizer is not None:
            out[path + ":step"] = p.quantizer.step.detach().flatten().tolist()
    return out


def main() -> None:
    import ddp_support  # the factories' module (as imported by the recipe), not __main__

    import squeezer
    from squeezer.pipeline.events import StageEnded
    from squeezer.recipe import parse_recipe

    out, dump, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resume = len(sys.argv) > 4 and sys.argv[4] == "resume"
    rank = int(os.environ.get("RANK", "0"))
    stages: list[dict[str, object]] = []

    def sink(event: object) -> None:
        if isinstance(event, StageEnded):
            stages.append(fingerprint(ddp_support.CREATED[-1]))
            if os.environ.get("DDP_TEST_KILL_AFTER_STAGE") == str(event.index) and rank == 1:
                os._exit(9)  # a rank dies abruptly after this stage's checkpoint

    fp = os.environ.get("DDP_TEST_FP") == "1"
    text = RECIPE.format(
        batch=batch,
        optim='optimizer = "sgd"\nlr = 0.05\nmomentum = 0.0' if fp else "lr = 0.01",
        quantizer="" if fp else 'quantizer = { name = "lsq", bits = 4 }\n',
    )
    recipe = parse_recipe(text, source="ddp.toml")
    squeezer.run(recipe, out=out, sink=sink, all_ranks=True, resume=resume, export=True)
    with open(f"{dump}.rank{rank}.json", "w") as f:
        json.dump(stages, f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    main()
