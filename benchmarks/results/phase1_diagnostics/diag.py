# ruff: noqa  (a one-off research script kept with its results, as run; not part of the package or the benchmark)
"""Phase 1 diagnostics (issue 16 item 3): validation accuracy at every round's end, right after each
pruning round (eval mode, train mode, after re-estimating BatchNorm statistics), per-layer density,
dead rows and BN running-statistics deviation at the end. One-off research script, not a benchmark.

    python benchmarks/results/phase1_diagnostics/diag.py kws_dscnn --dense          # dense stage, cached
    python benchmarks/results/phase1_diagnostics/diag.py kws_dscnn --probe --tag base --recipe OLD.toml
    python benchmarks/results/phase1_diagnostics/diag.py mobilenet_digits --tag log_lr4 \
        --prune '{"quantizer": {"log_step": true}, "lr": 0.004}' --recipe OLD.toml

The runs in runs.json used the pqk.toml before commit 66f9a38 (``git show 52b4a43:sdk/squeezer/recipes/pqk.toml
> OLD.toml``), target 0.90, 4 bits, seed 0, Phase 1 only, starting from the cached dense stage.
``--row`` needs row_protection.patch applied to sdk/squeezer/engine/pruner.py (not kept: it hurt).
"""
import copy, json, sys, time, argparse, os
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2])); sys.path.insert(0, str(HERE))
WORK = Path(os.environ.get("DIAG_WORK", "/tmp/phase1_diag")); WORK.mkdir(parents=True, exist_ok=True)
import torch
torch.set_num_threads(1)
from benchmarks.suite import REGISTRY
from benchmarks.suite_run import bundled_recipe, accuracy
import squeezer
from squeezer import compress
from squeezer.recipe import recipe_from_dict
from squeezer.pipeline.events import Pruned, EpochEnded

MODEL = {}

def make_model(member, state=""):
    m = REGISTRY[member].build_model()
    if state:
        m.load_state_dict(torch.load(state))
    MODEL["m"] = m
    return m

def bn_reestimate(model, loader, batches=20):
    m = copy.deepcopy(model)
    bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns: return None
    for b in bns:
        b.reset_running_stats(); b.momentum = None
    m.train()
    with torch.no_grad():
        for i, (x, y) in enumerate(loader):
            if i >= batches: break
            m(x)
    return m

def trainmode_acc(model, ds):
    m = copy.deepcopy(model); m.train()
    from benchmarks.suite.common import eval_loader
    c = t = 0
    with torch.no_grad():
        for x, y in eval_loader(ds):
            c += int((m(x).argmax(-1) == y).sum()); t += len(y)
    return 100.0 * c / t

def probe(tag, log, splits, loader):
    import diag as _d
    m = _d.MODEL["m"]
    row = {"tag": tag, "val": accuracy(m, splits.val), "val_trainmode": trainmode_acc(m, splits.val)}
    r = bn_reestimate(m, loader)
    if r is not None:
        row["val_bnre"] = accuracy(r, splits.val)
    log.append(row); print(json.dumps(row), flush=True)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("member"); ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dense", action="store_true")
    ap.add_argument("--prune", default="{}", help="JSON overrides of the prune stage")
    ap.add_argument("--training", default="{}")
    ap.add_argument("--tag", default="")
    ap.add_argument("--model-opts", default="{}")
    ap.add_argument("--dense-epochs", type=int, default=0)
    ap.add_argument("--mutual", action="store_true")
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--row", type=float, default=0.0)
    ap.add_argument("--recipe", default="")
    ap.add_argument("--bnre", type=int, default=0)
    a = ap.parse_args()
    from squeezer.pipeline.stages import prune as _pr
    _orig = _pr.PruneRunner.__init__
    def _init(self, *x, **k):
        _orig(self, *x, **k)
        if a.row: self.pruner.min_row_density = a.row
    _pr.PruneRunner.__init__ = _init
    if a.recipe:
        import benchmarks.suite_run as _sr
        _sr.RECIPE = Path(a.recipe)
    mem = REGISTRY[a.member]; splits = mem.make_splits()
    state = str(WORK / f"{a.member}_dense_s{a.seed}.pt")
    data = bundled_recipe(); data.update(mem.recipe_tables(batch_size=data["data"].get("batch_size")))
    dense, prune, mutual = data["stages"]
    data["training"].update(json.loads(a.training))
    out = str(WORK / f"out_{a.member}_{a.tag}_{os.getpid()}")
    data["output_dir"], data["device"] = out, "cpu"
    if a.dense:
        data["model"].update(json.loads(a.model_opts))
        if a.dense_epochs: dense["epochs"] = a.dense_epochs
        data["stages"] = [dense]
    else:
        data["model"] = {"factory": "diag:make_model", "member": a.member, "state": state}
        prune["scheduler"] = {**prune["scheduler"], "target": 0.9}
        prune["quantizer"] = {**prune["quantizer"], "bits": 4}
        for k, v in json.loads(a.prune).items():
            if v is None: prune.pop(k, None)
            elif isinstance(v, dict) and isinstance(prune.get(k), dict): prune[k] = {kk: vv for kk, vv in {**prune[k], **v}.items() if vv is not None}
            else: prune[k] = v
        data["stages"] = [prune, mutual] if a.mutual else [prune]
    loader = mem.loaders(batch_size=64)[0]
    log = []; per = prune.get("epochs_per_round", 4)
    def sink(ev):
        if isinstance(ev, Pruned) and a.probe:
            dens = {n: round(1 - ach, 4) for n, _, ach in ev.layers}
            log.append({"round": ev.round, "target": ev.target, "density": dens}); print("round", ev.round, ev.target, json.dumps(dens), flush=True)
            probe(f"after_prune_r{ev.round}", log, splits, loader)
        elif isinstance(ev, EpochEnded):
            row = {"stage": ev.stage, "epoch": ev.epoch, "loss": round(ev.loss, 4), "val": round(100 * ev.accuracy, 2)}
            log.append(row); print(json.dumps(row), flush=True)
            if a.probe and not a.dense and ev.stage == 0 and (ev.epoch + 1) % per == 0:
                probe(f"end_round_e{ev.epoch}", log, splits, loader)
    t0 = time.time()
    recipe = recipe_from_dict(data, source="diag")
    res = squeezer.run(recipe, out=out, overwrite=True, seed=a.seed, sink=sink, export=False)
    m = res.model
    final = {"final_val": accuracy(m, splits.val), "final_train": accuracy(m, splits.train), "seconds": time.time() - t0}
    if not a.dense:
        final["test"] = None
        from benchmarks.suite_run import dead_rows
        final["dead"] = {d["layer"]: (d["dead_mask"], d["rows"], round(d["density"], 4)) for d in dead_rows(m)}
        r = bn_reestimate(m, loader)
        if r is not None:
            final["final_val_bnre"] = accuracy(r, splits.val)
            bn0 = dict(m.named_modules()); dev = {}
            for n, b in r.named_modules():
                if isinstance(b, torch.nn.modules.batchnorm._BatchNorm):
                    o = bn0[n]
                    dv = ((o.running_var + 1e-5).log() - (b.running_var + 1e-5).log()).abs()
                    dm = (o.running_mean - b.running_mean).abs() / (b.running_var + 1e-5).sqrt()
                    dev[n] = (round(float(dv.max()), 2), round(float(dm.max()), 2), round(float(o.running_var.min()), 6), int(o.num_batches_tracked))
            final["bn_dev"] = dev
    print("FINAL", a.member, a.tag, json.dumps(final), flush=True)
    if a.dense and not a.tag:
        torch.save(m.state_dict(), state)
    with open(WORK / f"log_{a.member}_{a.tag or 'dense'}_s{a.seed}.json", "w") as f:
        json.dump({"args": vars(a), "log": log, "final": final}, f)

if __name__ == "__main__":
    main()
