"""The model suite (benchmarks/suite, issue 16): every member builds, its data factory yields the
right shapes and labels, its splits are fixed and disjoint, and it runs end to end through the
bundled PQK recipe on a tiny budget (benchmarks/suite_run.py with a data subset). The full
benchmark is not run here."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.suite import MEMBERS, REGISTRY, Member  # noqa: E402
from benchmarks.suite.common import random_shift, stratified_split  # noqa: E402

from benchmarks import suite_run  # noqa: E402

# input shape (without the batch), number of classes, input dtype
EXPECTED = {
    "digits_cnn": ((1, 8, 8), 10, torch.float32),
    "kws_dscnn": ((1, 40, 32), 12, torch.float32),
    "resnet_shapes": ((1, 16, 16), 10, torch.float32),
    "mobilenet_digits": ((1, 16, 16), 10, torch.float32),
    "transformer_tokens": ((32,), 8, torch.long),
    "gru_sensors": ((64, 3), 6, torch.float32),
}
IDS = [m.name for m in MEMBERS]


def test_registry_covers_the_brief() -> None:
    assert set(REGISTRY) == set(EXPECTED)
    assert len({m.domain for m in MEMBERS}) >= 3
    factories = {m.model["factory"] for m in MEMBERS}
    assert {"squeezer.examples.digits:make_model", "squeezer.examples.kws:make_model"} <= factories
    for m in MEMBERS:  # the recipe names them by import path; the paths resolve
        for path in (m.model["factory"], m.data["factory"], m.splits):
            assert callable(suite_run_resolve(path)), path


def suite_run_resolve(path: str) -> object:
    from benchmarks.suite.registry import _resolve

    return _resolve(path)


@pytest.mark.parametrize("member", MEMBERS, ids=IDS)
def test_model_builds_edge_sized(member: Member) -> None:
    torch.manual_seed(0)
    model = member.build_model()
    weights = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    assert 20_000 <= weights <= 200_000, weights
    shape, classes, dtype = EXPECTED[member.name]
    x = torch.zeros(3, *shape, dtype=dtype)
    out = model.eval()(x)
    assert out.shape == (3, classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("member", MEMBERS, ids=IDS)
def test_data_factory_shapes_and_labels(member: Member) -> None:
    shape, classes, dtype = EXPECTED[member.name]
    splits = member.make_splits()
    train, val = member.loaders(batch_size=32)
    torch.manual_seed(0)
    x, y = next(iter(train))
    assert x.shape == (32, *shape) and x.dtype == dtype and torch.isfinite(x.float()).all()
    assert y.dtype == torch.long and int(y.min()) >= 0 and int(y.max()) < classes
    assert len(train.dataset) == len(splits.train) and len(val.dataset) == len(splits.val)
    xv, yv = next(iter(val))  # validation: in order, unaugmented
    assert torch.equal(xv, splits.val.tensors[0][: len(xv)]) and torch.equal(yv, splits.val.tensors[1][: len(yv)])
    for part in splits:  # every class in every split, no class dominating
        counts = torch.bincount(part.tensors[1], minlength=classes)
        assert len(counts) == classes and int(counts.min()) > 0
        assert int(counts.max()) <= 2 * int(counts.min()) + 2
    small, _ = member.loaders(batch_size=32, subset=40)
    assert len(small.dataset) == 40


@pytest.mark.parametrize("member", MEMBERS, ids=IDS)
def test_splits_fixed_and_disjoint(member: Member) -> None:
    splits = member.make_splits()
    fn = suite_run_resolve(member.splits)
    again = fn.__wrapped__()  # bypass the cache: generated anew
    for a, b in zip(splits, again, strict=True):
        assert all(torch.equal(s, t) for s, t in zip(a.tensors, b.tensors, strict=True))
    digests = [{hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in part.tensors[0]} for part in splits]
    assert all(len(d) == len(p) for d, p in zip(digests, splits, strict=True))  # no sample twice in a split
    assert not (digests[0] & digests[1]) and not (digests[0] & digests[2]) and not (digests[1] & digests[2])


def test_digits_split_is_the_bundled_one_cut_in_three() -> None:
    from benchmarks.suite.digits_cnn import digit_indices

    from squeezer.examples.digits import split_indices

    train, val, test = digit_indices()
    bundled_train, bundled_val = split_indices(0)
    assert (len(train), len(val), len(test)) == (1047, 300, 450)
    assert set(train) | set(val) == set(bundled_train) and not set(train) & set(val)
    assert list(test) == list(bundled_val)


def test_stratified_split_and_shift() -> None:
    target = torch.arange(100).remainder(4).numpy()
    parts = stratified_split(target, (0.5, 0.3, 0.2), seed=1)
    assert sorted(int(i) for p in parts for i in p) == list(range(100))
    assert [len(p) for p in parts] == [48, 32, 20]  # 12 / 8 / 5 per class (cuts at round(12.5), round(20))
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(50, 1, 1, 1)
    torch.manual_seed(0)
    y = random_shift(x, 1)
    assert y.shape == x.shape and (y == 0).any()
    kept = [(r == x[0]).all() or r.sum() < x[0].sum() for r in y]  # shifts lose pixels, never add new ones
    assert all(kept)


def test_recipe_is_the_bundled_one() -> None:
    """Only [model], [data], the target sparsity and the bits differ from pqk.toml."""
    member = REGISTRY["resnet_shapes"]
    bundled = suite_run.bundled_recipe()
    recipe = suite_run.pqk_recipe(member, 0.9, 4, "out")
    assert recipe["model"] == member.model
    assert recipe["data"] == {**member.data, "batch_size": bundled["data"]["batch_size"]}
    prune = recipe["stages"][1]
    assert prune["scheduler"]["target"] == 0.9 and prune["quantizer"]["bits"] == 4
    assert prune["quantizer"]["overrides"] == bundled["stages"][1]["quantizer"]["overrides"]
    prune["scheduler"]["target"] = bundled["stages"][1]["scheduler"]["target"]
    prune["quantizer"]["bits"] = bundled["stages"][1]["quantizer"]["bits"]
    for key in ("model", "data", "output_dir", "device"):
        recipe.pop(key, None)
        bundled.pop(key, None)
    assert recipe == bundled
    assert suite_run.total_epochs(suite_run.pqk_recipe(member, 0.9, 4, "out")) == 44


@pytest.mark.parametrize("member", MEMBERS, ids=IDS)
def test_end_to_end_tiny(member: Member) -> None:
    """The bundled recipe on the member (1 dense epoch, 5 rounds x 1, Phase 2 1 epoch; 96 samples),
    measured as the benchmark measures it."""
    row = suite_run.run_one(member, "pqk", 0, 0.9, 4, scale=0.01, data_options={"subset": 96})
    assert "error" not in row, row.get("traceback")
    assert row["epochs"] == 7 and abs(row["sparsity"] - 0.9) < 0.02
    for key in ("student", "dense"):
        assert set(row[key]) >= {"train", "val", "test"}
        assert all(0.0 <= row[key][s] <= 100.0 for s in ("train", "val", "test"))
    assert row["artifact_bytes"] > 0 and 0 < row["accounted_bytes"] < row["fp32_bytes"]
    assert len(row["dead_rows"]) == len(row["layers"]) > 0
    assert all(0 <= d["dead_mask"] <= d["dead_quantized"] <= d["rows"] for d in row["dead_rows"])
    text = suite_run.report({"meta": {"models": [member.name], "seeds": [0], "sparsity": 0.9, "bits": 4,
                                      "epochs_scale": 0.01}, "runs": [row]})
    assert member.name in text and "SMOKE RUN" in text


def test_phase1_ft_is_pqk_with_phase2_replaced_by_fine_tuning() -> None:
    """The equal-budget ablation: the mutual stage becomes a train stage of the same epochs and lr;
    run tiny, the student stays pruned and quantized and the report pairs it with PQK."""
    member = REGISTRY["digits_cnn"]
    pqk = suite_run.pqk_recipe(member, 0.9, 4, "out")
    ft = suite_run.phase1_ft_recipe(member, 0.9, 4, "out")
    mutual = pqk["stages"][2]
    assert ft["stages"][:2] == pqk["stages"][:2]
    assert ft["stages"][2] == {"type": "train", "name": "phase1_ft", "lr": mutual["lr"],
                               "epochs": mutual["warmup_epochs"] + mutual["epochs"]}
    assert suite_run.total_epochs(ft) == suite_run.total_epochs(pqk) == 44
    rows = [suite_run.run_one(member, m, 0, 0.9, 4, scale=0.01, data_options={"subset": 96})
            for m in ("pqk", "phase1_ft")]
    assert all("error" not in r for r in rows), [r.get("traceback") for r in rows]
    assert rows[1]["epochs"] == 7 and abs(rows[1]["sparsity"] - 0.9) < 0.02 and rows[1]["teacher_val"] is None
    assert {lay["bits"] for lay in rows[1]["layers"]} == {lay["bits"] for lay in rows[0]["layers"]} == {4, 8}
    text = suite_run.report({"meta": {"models": [member.name], "seeds": [0], "sparsity": 0.9, "bits": 4,
                                      "epochs_scale": 0.01}, "runs": rows})
    assert "equal-budget Phase-1 ablation" in text


def test_recipe_option_replaces_the_bundled_recipe(tmp_path: Path) -> None:
    """``--recipe``: a candidate default runs through the same code as pqk.toml (only that file differs)."""
    bundled = (Path(suite_run.__file__).resolve().parents[1] / "sdk" / "squeezer" / "recipes" / "pqk.toml")
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(bundled.read_text(encoding="utf-8").replace("epochs_per_round = 4", "epochs_per_round = 3"),
                         encoding="utf-8")
    try:
        suite_run.RECIPE = candidate
        assert suite_run.pqk_recipe(REGISTRY["digits_cnn"], 0.9, 4, "out")["stages"][1]["epochs_per_round"] == 3
    finally:
        suite_run.RECIPE = None
    assert suite_run.pqk_recipe(REGISTRY["digits_cnn"], 0.9, 4, "out")["stages"][1]["epochs_per_round"] == 4


def test_merge_replaces_runs_of_the_same_model_method_and_seed() -> None:
    """``--merge``: runs split over processes land in one file; a rerun replaces the stored run."""
    def run(model: str, seed: int, val: float) -> dict[str, object]:
        return {"model": model, "method": "pqk", "seed": seed, "student": {"val": val}}

    base = {"meta": {"methods": ["pqk", "dense_full"], "seeds": [0, 1]},
            "runs": [run("a", 0, 1.0), run("a", 1, 2.0), {**run("a", 0, 5.0), "method": "dense_full"}]}
    part = {"meta": {"models": ["a"], "methods": ["pqk"], "seeds": [1, 2], "recipe": "x.toml", "wall_seconds": 3.0},
            "runs": [run("a", 1, 3.0), run("a", 2, 4.0)]}
    out = suite_run.merged(base, [part], "why")
    got = {(r["method"], r["seed"]): r["student"]["val"] for r in out["runs"]}
    assert got == {("pqk", 0): 1.0, ("pqk", 1): 3.0, ("pqk", 2): 4.0, ("dense_full", 0): 5.0}
    assert out["meta"]["appended"][-1]["seeds"] == [1, 2] and out["meta"]["appended"][-1]["recipe"] == "x.toml"
    assert suite_run._seed_range([1, 2]) == "1..2" and suite_run._seed_range(3) == "0..2"


@pytest.mark.parametrize("member", MEMBERS, ids=IDS)
def test_torch_baseline_compresses_what_squeezer_compresses(member: Member) -> None:
    """Plain PyTorch (``torch_baseline``) on a tiny budget: the weights squeezer targets, the deployed
    model at least as sparse as the target, 8 bits on the first weight only, the recipe's activation
    bits; the report pairs it with PQK."""
    from squeezer.compress.targets import Targets, resolve

    rows = [suite_run.run_one(member, m, 0, 0.9, 4, scale=0.01, data_options={"subset": 96})
            for m in ("torch_baseline", "pqk")]
    assert all("error" not in r for r in rows), [r.get("traceback") for r in rows]
    base = rows[0]
    assert [lay["layer"] for lay in base["layers"]] == list(resolve(member.build_model(), Targets()).targets)
    assert [lay["layer"] for lay in base["layers"]] == [lay["layer"] for lay in rows[1]["layers"]]
    assert [lay["bits"] for lay in base["layers"]] == [8] + [4] * (len(base["layers"]) - 1)
    assert base["activation_bits"] == suite_run.bundled_recipe()["stages"][1]["activations"]["bits"]
    assert base["sparsity"] >= 0.9 - 1e-3  # deployed zeros: pruned entries plus kept ones quantized to 0
    assert base["epochs"] == rows[1]["epochs"] and 0 < base["accounted_bytes"] < base["fp32_bytes"]
    assert all(0.0 <= base[k][s] <= 100.0 for k in ("student", "dense") for s in ("train", "val", "test"))
    text = suite_run.report({"meta": {"models": [member.name], "seeds": [0], "sparsity": 0.9, "bits": 4,
                                      "epochs_scale": 0.01}, "runs": rows})
    assert "PQK vs plain PyTorch" in text and "of 1 members" in text


def test_plot_points_per_member() -> None:
    """The accuracy-vs-size plot's points: compressed methods at their mean accounted size, the
    dense rows at the FP32 size, test accuracies per seed."""
    from benchmarks.suite_plot import points

    def row(method: str, seed: int, test: float, size: float) -> dict[str, object]:
        return {"model": "m", "method": method, "seed": seed, "student": {"test": test}, "accounted_bytes": size,
                "fp32_bytes": 400.0, "dense": {"test": 99.0}}

    data = {"meta": {"models": ["m"]}, "runs": [
        row("pqk", 0, 90.0, 10.0), row("pqk", 1, 92.0, 12.0), row("torch_baseline", 0, 80.0, 11.0),
        {"model": "m", "method": "dense_full", "seed": 0, "dense_full": {"test": 98.0}},
        {"model": "m", "method": "pqk", "seed": 2, "error": "boom"}]}
    got = points(data, "m")
    assert got == {"pqk": (11.0, [90.0, 92.0]), "torch_baseline": (11.0, [80.0]),
                   "dense@12": (400.0, [99.0, 99.0]), "dense@44": (400.0, [98.0])}


def test_stored_observations_replace_the_pages_hand_written_ones(tmp_path: Path) -> None:
    """A report whose run stores its observations (``--observations``) drops the page's older
    hand-written section instead of printing both; without stored ones the page's are kept."""
    page = tmp_path / "X.md"
    page.write_text("# old\n\n## Observations (written by hand from this run's numbers)\n\nstale\n", encoding="utf-8")
    meta = {"models": [], "seeds": [0], "sparsity": 0.9, "bits": 4, "epochs_scale": 1.0}
    kept = suite_run.markdown(page, {"meta": meta, "runs": []})
    assert "stale" in kept
    fresh = suite_run.markdown(page, {"meta": {**meta, "observations": "- fresh"}, "runs": []})
    assert "- fresh" in fresh and "stale" not in fresh


def test_a_report_of_dense_runs_alone_has_no_goal_section() -> None:
    """``--methods dense_full`` (or its first run) has nothing to pair yet: the report is written
    without the PQK goal line instead of failing on an empty mean."""
    row = {"model": "digits_cnn", "method": "dense_full", "seed": 0, "seconds": 1.0, "epochs": 44,
           "dense_full": {"train": 100.0, "val": 98.0, "test": 99.0}}
    meta = {"models": ["digits_cnn"], "seeds": [0], "sparsity": 0.9, "bits": 4, "epochs_scale": 1.0}
    text = suite_run.report({"meta": meta, "runs": [row]})
    assert "digits_cnn" in text and "Mean paired test gap" not in text
