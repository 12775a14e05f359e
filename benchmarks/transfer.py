"""Width Transfer: search on a cheap proxy and project, against searching on the target directly.

    python benchmarks/transfer.py --json /tmp/transfer.json                  # everything, 3 seeds
    python benchmarks/transfer.py --parts resnet20 --seeds 0 --json /tmp/t.json --no-write
    python benchmarks/transfer.py --from-json --json /tmp/transfer.json      # re-render RESULTS.md only

Needs Fashion-MNIST (Debian package `dataset-fashion-mnist`); stops with that message when missing.

**Transfer tracks** (`resnet20`, `lite0`). The target is trained first (ResNet-20 from scratch;
EfficientNet-Lite0 from its ImageNet weights, new 10-class head, 64 px), once, shared by every
seed. Per seed, `compress(target, method="evolution", latency=BUDGETS)` runs twice: *direct*
(a supernet on the target, the search on it) and *proxy* (`proxy=PROXY`: the supernet and the
search on the proxy, widths projected). Both get the same fine-tuning epochs and the same
measured-latency check on ONNX Runtime (1 thread, one latency model, reused from one database), but
not the same weights: *direct* extracts its models from the supernet it trained on the target (one
more epoch on the target, sandwich-trained for narrow widths), *proxy* prunes the trained target, as
`compress` does. On a pretrained target that difference can decide the accuracy, so the proxy run also
delivers the direct run's widths (same seed) its own way (`pruned_accuracy`): the difference between
the two is the widths' alone. Recorded per run: search cost = wall seconds of
the shared-weight training (with the proxy's construction) plus every search, timed around the
pipeline's own calls; training MACs = 3 (forward + backward) × sandwich size 4 × full-width MACs
(the supernet masks, so every sub-network costs a full-width pass) × images × epochs; scoring MACs
= candidates × (held-out + 3 calibration batches) × full-width MACs; and per budget the delivered
test accuracy, measured latency ratio and per-group multipliers. Rank correlation: Spearman
(average ranks for ties) between the delivered per-group multipliers (kept / full) of the proxy
run and of the direct run, over every group of the target, same seed and budget; groups the
latency staircase leaves at full width tie at 1.0 in both. The direct-vs-direct figure (pairs
of seeds) is its noise floor.

**Invariance study** (`invariance`). CIFAR ResNets trained from scratch on the same Fashion-MNIST
subset (2 plain epochs, then 1 supernet epoch), each searched directly by evolution at MACs ≤ 0.5×
its own (MACs, not latency, as the paper; no runtime noise): widths ×0.5/×1/×2 (8, 16, 32 base
channels), depths 1 and 2 blocks per stage (ResNet-8/14) and resolutions 28/14 px around the base
ResNet-8, 16 channels, 28 px. Multipliers are compared per position (stem, and per stage its tied width and its
blocks' mid width averaged over blocks): Pearson and Spearman against the base, same seed, and
base against base across seeds (the noise floor).

Every finished run is appended to the JSON file (a re-run skips it); RESULTS.md sections
`transfer` and `transfer_invariance` are written at the end.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SEEDS = (0, 1, 2)
PROXY = "width=0.5,depth=min,resolution=0.5,data=0.2"
TRACKS = {
    "resnet20": {"spec": "slimdeploy.models:cifar_resnet20", "shape": (1, 3, 28, 28), "data": "transfer:fashion_gray",
                 "train": 3000, "val": 1000, "pretrain_epochs": 4, "pretrain_lr": 0.05, "budgets": "0.35x,0.5x",
                 "align": 8, "lr": 0.01},  # align 4: the latency model misses (MAPE 11% vs 2%), floor 0.52x
    "lite0": {"spec": "slimdeploy.pretrained:efficientnet_lite0_10", "shape": (1, 3, 64, 64),
              "data": "transfer:fashion_imagenet", "train": 3000, "val": 1000, "pretrain_epochs": 6,
              "pretrain_lr": 0.02, "budgets": "0.3x,0.5x", "align": 8, "lr": 0.005},
    # lite0: 1 epoch on 1500 images left the target at 41 %, so the direct run's supernet epoch on the
    # target was mostly more training of it; ~280 steps bring the pretrained network near its plateau
}
SEARCH = {"population": 8, "generations": 3, "parents": 4}
RETRIES = 5  # re-searches after a measured miss: runs share a noisy 2-core machine
INVARIANCE = {  # name: (blocks per stage, base channels, resolution)
    "base": (1, 16, 28), "width x0.5": (1, 8, 28), "width x2": (1, 32, 28), "depth 2": (2, 16, 28),
    "resolution 14": (1, 16, 14)}
INVARIANCE_DATA = 2000
INVARIANCE_PRETRAIN = 2   # plain epochs before the supernet epoch (a supernet from scratch on 2k images learns nothing)
SANDWICH = 4


# -- data: a fixed subset of Fashion-MNIST (the same draw for every seed and model) ---------------------
def _fashion(input_shape, normalize):
    import torch
    from torch.utils.data import Subset

    from slimdeploy.data import load_dataset

    train, val, info = load_dataset("fashion-mnist", input_shape=input_shape, normalize=normalize)
    n_train, n_val = int(os.environ.get("TRANSFER_BENCH_TRAIN", 8000)), int(os.environ.get("TRANSFER_BENCH_VAL", 2000))
    g = torch.Generator().manual_seed(1234)
    pick = lambda n, total: torch.randperm(total, generator=g)[:n].sort().values.tolist()  # noqa: E731
    return (Subset(train, pick(n_train, len(train))), Subset(val, pick(n_val, len(val))),
            {"num_classes": 10, "name": f"fashion-mnist {n_train}/{n_val}"})


def fashion_gray(input_shape=None):
    """Fashion-MNIST subset standardized with its own statistics (models trained from scratch)."""
    return _fashion(input_shape, "dataset")


def fashion_imagenet(input_shape=None):
    """Fashion-MNIST subset with ImageNet normalization (the pretrained EfficientNet-Lite0)."""
    return _fashion(input_shape, "imagenet")


# -- statistics ---------------------------------------------------------------------------------------
def _ranks(values):
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def pearson(a, b):
    if len(a) < 3:
        return None
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    sa = sum((x - ma) ** 2 for x in a) ** 0.5
    sb = sum((y - mb) ** 2 for y in b) ** 0.5
    if sa == 0 or sb == 0:
        return None  # a constant vector (uniform widths): no ranking to compare
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / (sa * sb)


def spearman(a, b):
    return pearson(_ranks(a), _ranks(b))


def mean_std(values, digits=2, scale=1.0):
    values = [v * scale for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


# -- the transfer tracks --------------------------------------------------------------------------------
def target_model(track: str, work: Path, say):
    """The trained target of a track (trained once and kept in `work`)."""
    import torch

    from slimdeploy.data import load_dataset, make_loader
    from slimdeploy.train import accuracy, train_classifier
    from slimdeploy.zoo import build

    cfg = TRACKS[track]
    torch.manual_seed(0)
    model = build(cfg["spec"])
    path = work / f"{track}-target.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train, val, _ = load_dataset(cfg["data"], input_shape=cfg["shape"])
    started = time.perf_counter()
    train_classifier(model, make_loader(train, 64, shuffle=True, seed=0), epochs=cfg["pretrain_epochs"],
                     lr=cfg["pretrain_lr"])
    say(f"{track}: target trained in {time.perf_counter() - started:.0f} s, test accuracy "
        f"{accuracy(model, make_loader(val, 256)):.4f}")
    torch.save(model.state_dict(), work / f".{path.name}.tmp")
    os.replace(work / f".{path.name}.tmp", path)
    return model.eval()


class Clock:
    """Wall seconds of the pipeline's shared-weight set-up and of every search, from its own calls."""

    def __init__(self):
        self.setup = 0.0
        self.search = 0.0
        self.lines: list[tuple[float, str]] = []

    def say(self, text: str) -> None:
        self.lines.append((time.perf_counter(), text))
        print(f"    {text}", flush=True)

    def searches(self) -> float:
        """Sum of [searching widths … fine-tuning) intervals (each search, retries included)."""
        total, start = 0.0, None
        for t, text in self.lines:
            if text.startswith("searching widths"):
                start = t
            elif start is not None and (text.startswith("fine-tuning") or text.startswith("verifying")):
                total, start = total + t - start, None
        return total


CLOCK: list = [None]


def pruned_accuracy(track: str, model, multipliers: dict, seed: int) -> float:
    """Test accuracy of a width vector delivered as `compress --proxy` delivers: pruned from the trained
    target, fine-tuned as compress fine-tunes (1 epoch, distillation, this seed), BatchNorm settled."""
    import torch

    from slimdeploy.analysis import analyse
    from slimdeploy.delivery import SETTLE_BATCHES
    from slimdeploy.prune import prune
    from slimdeploy.scoring import scoring_data
    from slimdeploy.space import Widths
    from slimdeploy.train import accuracy, finetune, settle_batchnorm

    cfg = TRACKS[track]
    x = torch.randn(*cfg["shape"], generator=torch.Generator().manual_seed(seed))
    analysis = analyse(model, x)
    widths = Widths(analysis.space.fingerprint,
                    {g.name: round(multipliers.get(g.name, 1.0) * g.width) for g in analysis.space})
    pruned = prune(model, widths, x, analysis=analysis)
    data = scoring_data(cfg["data"], cfg["shape"], 64, seed)
    finetune(pruned, data["train"], 1, lr=cfg["lr"], teacher=model, seed=seed)
    settle_batchnorm(pruned, data["train"], data["held_out"], SETTLE_BATCHES)
    return accuracy(pruned, data["val"])


def run_transfer(track: str, variant: str, seed: int, work: Path, say, direct: dict | None = None) -> dict:
    from slimdeploy.pipeline import compress
    from slimdeploy.scoring import SEARCH_SPLIT, SEARCH_SPLIT_MAX

    cfg = TRACKS[track]
    os.environ["TRANSFER_BENCH_TRAIN"], os.environ["TRANSFER_BENCH_VAL"] = str(cfg["train"]), str(cfg["val"])
    model = target_model(track, work, say)
    out = work / f"{track}-{variant}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    clock = Clock()
    CLOCK[0] = clock
    _patch()
    started = time.perf_counter()
    summary = compress(model, out, latency=cfg["budgets"], input_shape=cfg["shape"], say=clock.say,
                       data=cfg["data"], method="evolution", search_options={**SEARCH, "seed": seed},
                       align=cfg["align"], supernet_epochs=1, finetune_epochs=1, lr=cfg["lr"], seed=seed,
                       threads=1, samples=24, db=str(work / "latency.sqlite"), retries=RETRIES,
                       proxy=PROXY if variant == "proxy" else None)
    wall = time.perf_counter() - started
    n_search = max(1, min(SEARCH_SPLIT_MAX, int(cfg["train"] * SEARCH_SPLIT)))
    budgets = {}
    candidates, images, macs_full, epochs = 0, cfg["train"] - n_search, None, 1
    rows = summary["budgets"] if "budgets" in summary else [{"budget": summary["budget"]["latency"], "folder": "."}]
    for row in rows:  # one budget: compress returns that budget's report
        folder = out / row["folder"]
        report = json.loads((folder / "report.json").read_text())
        macs_full = macs_full or report["macs"]["original"]
        entry = {"accuracy": report["accuracy"]["compressed"], "original_accuracy": report["accuracy"]["original"],
                 "latency_ratio": report["latency_ms"]["ratio"], "macs_ratio": report["macs"]["compressed"]
                 / report["macs"]["original"],
                 "multipliers": {g: v["kept"] / v["full"] for g, v in report["groups"].items()}}
        if variant == "proxy":
            t = json.loads((folder / "transfer.json").read_text())
            entry.update(projected=t["target_multipliers"], scale=t["global_scale"])
            if direct and row["budget"] in direct["budgets"]:  # the direct search's widths, delivered the proxy's way
                entry["direct_widths_pruned"] = pruned_accuracy(
                    track, model, direct["budgets"][row["budget"]]["multipliers"], seed)
            candidates += t["proxy_search"]["candidates"]
            macs_full, images, epochs = t["proxy"]["macs"], t["proxy"]["train_images"], t["proxy"]["epochs"]
        else:
            candidates += report["search"]["evaluated"]
        budgets[row["budget"]] = entry
    per_image = macs_full  # full-width MACs of what the search trains and scores (proxy or target)
    return {"track": track, "variant": variant, "seed": seed, "wall": wall, "setup_seconds": clock.setup,
            "search_seconds": clock.searches(), "candidates": candidates,
            "training_macs": 3 * SANDWICH * per_image * images * epochs,
            "scoring_macs": candidates * (n_search + 3 * 64) * per_image, "train_images": images,
            "budgets": budgets}


_PATCHED = []


def _patch():
    """Time `provide` (the supernet) and `with_proxy` (proxy, its data, its supernet) inside the pipeline."""
    if _PATCHED:
        return
    import slimdeploy.pipeline as pipeline
    import slimdeploy.transfer.setup as setup

    def timed(fn):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                CLOCK[0].setup += time.perf_counter() - started
        return wrapper

    pipeline.provide = timed(pipeline.provide)
    setup.with_proxy = timed(setup.with_proxy)
    _PATCHED.append(True)


# -- the invariance study -------------------------------------------------------------------------------
def run_invariance(name: str, seed: int, say) -> dict:
    import torch

    from slimdeploy.analysis import analyse
    from slimdeploy.channels import ChannelMap
    from slimdeploy.costs import CostModel
    from slimdeploy.models import CifarResNet
    from slimdeploy.scoring import scoring_data
    from slimdeploy.search import LATENCY, SearchProblem, get_searcher
    from slimdeploy.supernet import Supernet, SupernetTraining, train_supernet
    from slimdeploy.train import train_classifier
    from slimdeploy.transfer.layout import Layout

    blocks, width, res = INVARIANCE[name]
    os.environ["TRANSFER_BENCH_TRAIN"], os.environ["TRANSFER_BENCH_VAL"] = str(INVARIANCE_DATA), "500"
    torch.manual_seed(seed)
    model = CifarResNet(blocks, width).eval()
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))
    analysis = analyse(model, x)
    data = scoring_data("transfer:fashion_gray", tuple(x.shape), 64, seed)
    align = max(1, width // 4)
    started = time.perf_counter()
    train_classifier(model, data["train"], epochs=INVARIANCE_PRETRAIN, lr=0.05, seed=seed)
    model.eval()
    supernet = Supernet(model, x, analysis, align=align)
    train_supernet(supernet, data["train_set"], SupernetTraining(epochs=1, lr=0.01, seed=seed), say=lambda text: None)
    trained = time.perf_counter() - started
    costs = CostModel.build(model, x, ChannelMap.build(model, analysis))
    macs0 = costs.counts(analysis.space.full())[0]
    problem = SearchProblem(analysis.space, {LATENCY: lambda w: costs.counts(w)[0] / macs0}, {LATENCY: 0.5},
                            functools.cache(supernet.scorer(data["calibration"], data["held_out"])), align=align,
                            min_fraction=0.2)
    result = get_searcher("evolution", **SEARCH, seed=seed).search(problem)
    layout = Layout.of(model, x, analysis.space)
    per_key: dict[str, list[float]] = {}
    for g in analysis.space:
        p = layout.positions[g.name]
        key = p.slot if p.outside else f"stage {p.stage} {p.slot}"
        per_key.setdefault(key, []).append(result.widths[g.name] / g.width)
    say(f"invariance {name} seed {seed}: score {result.score:.4f}, MACs {problem.latency(result.widths):.3f}x, "
        f"{time.perf_counter() - started:.0f} s")
    return {"name": name, "seed": seed, "score": result.score, "macs_ratio": problem.latency(result.widths),
            "train_seconds": trained, "seconds": time.perf_counter() - started,
            "multipliers": {k: statistics.fmean(v) for k, v in per_key.items()}}


# -- tables -------------------------------------------------------------------------------------------
def transfer_tables(rows: list[dict]) -> str:
    out = []
    for track in TRACKS:
        mine = [r for r in rows if r.get("track") == track]
        if not mine:
            continue
        direct = {r["seed"]: r for r in mine if r["variant"] == "direct"}
        proxy = {r["seed"]: r for r in mine if r["variant"] == "proxy"}
        cfg = TRACKS[track]
        out.append(f"### {track}: {cfg['spec']} at {cfg['shape'][-1]} px, Fashion-MNIST {cfg['train']} train / "
                   f"{cfg['val']} test images; proxy `{PROXY}`; seeds {sorted(set(direct) | set(proxy))}\n")
        out.append("| search | search wall s | shared-weight set-up s | searches s | candidates | training MACs "
                   "| scoring MACs |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for label, runs in (("direct", direct), ("proxy", proxy)):
            rs = list(runs.values())
            if not rs:
                continue
            out.append(f"| {label} | {mean_std([r['setup_seconds'] + r['search_seconds'] for r in rs], 0)} | "
                       f"{mean_std([r['setup_seconds'] for r in rs], 0)} | {mean_std([r['search_seconds'] for r in rs], 0)} | "
                       f"{mean_std([r['candidates'] for r in rs], 0)} | "
                       f"{mean_std([r['training_macs'] for r in rs], 2, 1e-12)} T | "
                       f"{mean_std([r['scoring_macs'] for r in rs], 2, 1e-12)} T |")
        seeds = sorted(set(direct) & set(proxy))
        if seeds:
            ratio = lambda key: [direct[s][key] / max(proxy[s][key], 1e-9) for s in seeds]  # noqa: E731
            wall = [(direct[s]["setup_seconds"] + direct[s]["search_seconds"])
                    / max(proxy[s]["setup_seconds"] + proxy[s]["search_seconds"], 1e-9) for s in seeds]
            out.append(f"\nCost ratio direct / proxy: wall {mean_std(wall, 1)}×, training MACs "
                       f"{mean_std(ratio('training_macs'), 0)}×, scoring MACs {mean_std(ratio('scoring_macs'), 1)}×.\n")
        same = any("direct_widths_pruned" in e for r in proxy.values() for e in r["budgets"].values())
        out.append("| budget | direct: test acc % | proxy: test acc % | proxy − direct (points) | "
                   + ("direct widths delivered as proxy: test acc % | proxy − that (points) | " if same else "")
                   + "direct latency ratio | proxy latency ratio | proxy global scale | Spearman proxy vs direct | "
                   "Spearman direct vs direct (seeds) |")
        out.append("|---|---:|---:|---:|" + ("---:|---:|" if same else "") + "---:|---:|---:|---:|---:|")
        budgets = next(iter(mine))["budgets"].keys()
        for b in budgets:
            d = [direct[s]["budgets"][b] for s in sorted(direct)]
            p = [proxy[s]["budgets"][b] for s in sorted(proxy)]
            diff = [proxy[s]["budgets"][b]["accuracy"] - direct[s]["budgets"][b]["accuracy"] for s in seeds]
            groups = sorted(d[0]["multipliers"]) if d else []
            rho = [spearman([proxy[s]["budgets"][b]["multipliers"][g] for g in groups],
                            [direct[s]["budgets"][b]["multipliers"][g] for g in groups]) for s in seeds]
            floor = [spearman([direct[a]["budgets"][b]["multipliers"][g] for g in groups],
                              [direct[c]["budgets"][b]["multipliers"][g] for g in groups])
                     for i, a in enumerate(sorted(direct)) for c in sorted(direct)[i + 1:]]
            cells = ""
            if same:
                pruned = [e["direct_widths_pruned"] for e in p if "direct_widths_pruned" in e]
                gap = [e["accuracy"] - e["direct_widths_pruned"] for e in p if "direct_widths_pruned" in e]
                cells = f"{mean_std(pruned, 2, 100)} | {mean_std(gap, 2, 100)} | "
            out.append(f"| {b} | {mean_std([e['accuracy'] for e in d], 2, 100)} | "
                       f"{mean_std([e['accuracy'] for e in p], 2, 100)} | {mean_std(diff, 2, 100)} | {cells}"
                       f"{mean_std([e['latency_ratio'] for e in d], 3)} | {mean_std([e['latency_ratio'] for e in p], 3)} | "
                       f"{mean_std([e['scale'] for e in p], 3)} | {mean_std(rho, 2)} "
                       f"({sum(r is None for r in rho)} undefined) | {mean_std(floor, 2)} "
                       f"({sum(r is None for r in floor)} undefined) |")
        original = [e["original_accuracy"] for r in mine for e in r["budgets"].values()]
        out.append(f"\nOriginal (unpruned target) test accuracy: {100 * original[0]:.2f} %.\n" if original else "")
    return "\n".join(out)


def invariance_table(rows: list[dict]) -> str:
    base = {r["seed"]: r for r in rows if r["name"] == "base"}
    if not base:
        return ""
    keys = sorted(next(iter(base.values()))["multipliers"])
    out = [f"Positions compared ({len(keys)}): {', '.join(keys)}.\n",
           "| network | blocks/stage, channels, px | searched score (supernet) | MACs ratio | Pearson vs base | "
           "Spearman vs base | mean abs. multiplier difference | seconds |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, (blocks, width, res) in INVARIANCE.items():
        rs = [r for r in rows if r["name"] == name]
        if not rs:
            continue
        if name == "base":
            pairs = [(base[a], base[c]) for i, a in enumerate(sorted(base)) for c in sorted(base)[i + 1:]]
        else:
            pairs = [(r, base[r["seed"]]) for r in rs if r["seed"] in base]
        vec = lambda r: [r["multipliers"][k] for k in keys]  # noqa: E731
        pr = [pearson(vec(a), vec(c)) for a, c in pairs]
        sr = [spearman(vec(a), vec(c)) for a, c in pairs]
        mad = [statistics.fmean(abs(x - y) for x, y in zip(vec(a), vec(c))) for a, c in pairs]
        label = "base (seed vs seed: the noise floor)" if name == "base" else name
        out.append(f"| {label} | {blocks}, {width}, {res} | {mean_std([r['score'] for r in rs], 4)} | "
                   f"{mean_std([r['macs_ratio'] for r in rs], 3)} | {mean_std(pr, 2)} | {mean_std(sr, 2)} | "
                   f"{mean_std(mad, 3)} | {mean_std([r['seconds'] for r in rs], 0)} |")
    mean_m = {k: statistics.fmean(r["multipliers"][k] for r in rows if r["name"] == "base") for k in keys}
    out.append("\nBase multipliers (mean over seeds): "
               + ", ".join(f"{k} {v:.2f}" for k, v in mean_m.items()) + ".")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="resnet20,lite0,invariance")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--json", default=str(Path(tempfile.gettempdir()) / "slimdeploy-transfer-bench.json"),
                        help="runs are appended to this file and skipped when there; several, comma-separated, "
                             "are all read (the tables cover them all)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "slimdeploy-transfer-bench"))
    parser.add_argument("--from-json", action="store_true", help="render RESULTS.md from --json, run nothing")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md alone")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--command", help="the command line to record in RESULTS.md (when rendering saved runs)")
    parser.add_argument("--reading", help="what the transfer tables say, added under them (@FILE reads a file)")
    parser.add_argument("--reading-invariance", help="the same for the invariance table")
    args = parser.parse_args(argv)
    from slimdeploy.data import FASHION_MNIST_DIR

    if not args.from_json and not Path(FASHION_MNIST_DIR).is_dir():
        print(f"Fashion-MNIST is missing ({FASHION_MNIST_DIR}): apt-get install -y dataset-fashion-mnist",
              file=sys.stderr)
        return 2
    paths = [Path(p) for p in args.json.split(",")]
    path = paths[0]  # runs are appended here; every file listed is read (parts run as separate processes)
    rows = [r for p in paths if p.exists() for r in json.loads(p.read_text())]
    if not args.from_json:
        import torch

        torch.set_num_threads(args.threads)
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        say = lambda text: print(text, flush=True)  # noqa: E731
        seeds = [int(s) for s in args.seeds.split(",")]
        parts = args.parts.split(",")
        jobs = [("transfer", "resnet20", v, s) for s in seeds for v in ("direct", "proxy") if "resnet20" in parts]
        jobs += [("invariance", n, None, s) for s in seeds for n in INVARIANCE if "invariance" in parts]
        jobs += [("transfer", "lite0", v, s) for s in seeds for v in ("direct", "proxy") if "lite0" in parts]
        for kind, name, variant, seed in jobs:
            key = (kind, name, variant, seed)
            if any((r.get("kind"), r.get("track", r.get("name")), r.get("variant"), r["seed"]) == key for r in rows):
                continue
            say(f"== {kind} {name} {variant or ''} seed {seed}")
            try:
                direct = next((r for r in rows if (r.get("kind"), r.get("track"), r.get("variant"), r["seed"])
                               == ("transfer", name, "direct", seed)), None)
                row = run_transfer(name, variant, seed, work, say, direct) if kind == "transfer" else \
                    run_invariance(name, seed, say)
            except Exception:
                traceback.print_exc()
                continue
            rows.append({"kind": kind, **row})
            mine = json.loads(path.read_text()) if path.exists() else []
            path.write_text(json.dumps(mine + [rows[-1]], indent=1))
    transfers = [r for r in rows if r.get("kind") == "transfer"]
    invariance = [r for r in rows if r.get("kind") == "invariance"]
    from results import reading_text, write_section

    command = args.command or "python benchmarks/transfer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = transfer_tables(transfers)
    inv = invariance_table(invariance)
    if text and args.reading:
        text += "\n\n" + reading_text(args.reading)
    if inv and args.reading_invariance:
        inv += "\n\n" + reading_text(args.reading_invariance)
    print(text)
    print(inv)
    if not args.no_write:
        if text:
            write_section("transfer", text, command=command)
        if inv:
            write_section("transfer_invariance", inv, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
