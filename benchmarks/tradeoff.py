"""Accuracy at equal measured latency and equal training epochs: uniform, torch-pruning global, greedy, supernet + slim/evolution.

    python benchmarks/tradeoff.py original --track resnet20          # train the "user's model" once
    python benchmarks/tradeoff.py run --track resnet20 --seeds 0 1 2  # every method x seed, resumable
    python benchmarks/tradeoff.py ranking --track resnet20            # Kendall tau, supernet vs stand-alone
    python benchmarks/tradeoff.py costs --track resnet20              # step time and evaluations per minute
    python benchmarks/tradeoff.py refit --track resnet20              # evolution's widths fine-tuned like uniform
    python benchmarks/tradeoff.py render                              # tables -> RESULTS.md

Tracks: a CIFAR-style ResNet-20 trained from scratch on Fashion-MNIST (10k training images, 28 px),
and the ImageNet-pretrained EfficientNet-Lite0 fine-tuned on Fashion-MNIST at 64 px. Final accuracies
are on the official 10 000-image test split; searches score on a split of the training set.
Every method gets the same training epochs after the original is trained: uniform, greedy and
torch-pruning global get `--epochs` of fine-tuning (distillation from the original); the supernet
methods get `--supernet-epochs` of supernet training plus the rest as fine-tuning of each delivered
model (the supernet is trained once for all budgets). Latency is ONNX Runtime, 1 thread, measured
interleaved against the original; `compress` re-searches when a delivered model measures over.
Results accumulate in WORK/results.json (a killed run loses at most the method it was running).
Two runs may share a 2-core machine, each pinned to a core (`taskset -c N`), with `--quiet DIR` on both:
every latency measurement then pauses the other run (benchmarks/quiet.py), so training runs side by side
and timing runs alone.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

SECTION = "tradeoff"
TRACKS = {
    "resnet20": {"spec": "slimdeploy.models:cifar_resnet20", "shape": (1, 3, 28, 28), "data": "bench_data:fashion_10k",
                 "original_epochs": 10, "original_lr": 0.05, "budgets": "0.7x,0.5x,0.35x", "align": 8},
    "lite0": {"spec": "slimdeploy.pretrained:efficientnet_lite0_10", "shape": (1, 3, 64, 64),
              "data": "bench_data:fashion_10k_imagenet", "original_epochs": 2, "original_lr": 0.02,
              "budgets": "0.5x,0.3x,0.2x", "align": 8,
              # a candidate costs ~5 s to score on 1 thread (full-size masked network, 1000 images)
              "evolution": {"population": 12, "generations": 4}},
}
RETRIES = 5  # re-searches after a measured miss: budgets near a track's latency floor miss by ~1% on noise
METHODS = ("uniform", "tp-global", "greedy", "slim", "evolution")
EVOLUTION = {"population": 24, "generations": 8}  # unless the track sets its own


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _results(work: Path) -> dict:
    path = work / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save(work: Path, results: dict) -> None:
    tmp = work / f".results.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, work / "results.json")


def _data(track: dict, batch_size: int = 64, seed: int = 0):
    from slimdeploy.scoring import scoring_data

    return scoring_data(track["data"], track["shape"], batch_size, seed)


def load_original(work: Path, name: str):
    """The trained original of a track (its weights saved by `original`)."""
    from slimdeploy.zoo import build

    track = TRACKS[name]
    model = build(track["spec"])
    model.load_state_dict(torch.load(work / f"original-{name}.pt", weights_only=True))
    meta = getattr(model, "_slimdeploy")
    meta["input_shape"] = list(track["shape"])
    return model.eval()


def cmd_original(args) -> None:
    """Train (resnet20, from scratch) or fine-tune (lite0, pretrained) the track's original model."""
    from slimdeploy.train import accuracy, train_classifier
    from slimdeploy.zoo import build

    track = TRACKS[args.track]
    torch.manual_seed(0)
    model = build(track["spec"])
    data = _data(track)
    started = time.perf_counter()
    train_classifier(model, data["train"], track["original_epochs"], lr=track["original_lr"], seed=0,
                     progress=lambda s: s["batch"] == s["batches"] and log(f"original epoch {s['epoch']} loss {s['loss']:.3f}"))
    torch.save(model.state_dict(), args.work / f"original-{args.track}.pt")
    results = _results(args.work)
    results.setdefault(args.track, {})["original"] = {
        "accuracy": accuracy(model.eval(), data["val"]), "epochs": track["original_epochs"],
        "seconds": round(time.perf_counter() - started, 1)}
    _save(args.work, results)
    log(f"original {args.track}: {results[args.track]['original']}")


def _tp_global(model, x, ratio: float, align: int):
    """torch-pruning's global magnitude pruning (all groups ranked together) at `ratio`, classifier kept."""
    import torch.nn as nn
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    last = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1:]
    pruner = tp.pruner.MetaPruner(pruned, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, global_pruning=True, ignored_layers=last, round_to=align)
    pruner.step()
    return pruned


def run_tp_global(track: dict, model, budgets, args, seed: int, workdir: Path) -> list[dict]:
    """Per budget: the least global pruning ratio (0.05 grid) whose measured latency meets it; fine-tune (BatchNorm
    statistics then re-estimated as `compress` does), measure, score."""
    from slimdeploy.delivery import SETTLE_BATCHES
    from slimdeploy.inspection import count_macs_params
    from slimdeploy.runtimes import get_runtime
    from slimdeploy.train import accuracy, finetune, settle_batchnorm

    x = torch.randn(*track["shape"])
    rt = get_runtime("onnxruntime", {"threads": 1})
    original = rt.export(model, x, workdir / "original.onnx")
    data = _data(track, seed=seed)

    def ratio_of(pruned, name):
        path = rt.export(pruned, x, workdir / f"{name}.onnx")
        return rt.compare([original, path], track["shape"], rounds=6, max_rounds=24, max_seconds=6).ratios[1]

    # torch-pruning's global ranking is not monotone in the ratio here (ResNet-20, round_to 8: MACs 9.2M at
    # 0.4, 13.6M at 0.6, unpruned from 0.9 on), so bisection misleads: scan a grid once, measure each.
    grid = {}
    for i in range(1, 19):
        ratio = round(0.05 * i, 2)
        grid[ratio] = ratio_of(_tp_global(model, x, ratio, track["align"]), "probe")
    rows = []
    for budget in budgets:
        target = float(budget.rstrip("x"))
        meeting = [r for r, measured in sorted(grid.items()) if measured <= target]
        if not meeting:
            rows.append({"budget": budget, "unreachable": True, "lowest_ratio": min(grid.values())})
            continue
        high = meeting[0]  # the least pruning that meets the budget
        best = _tp_global(model, x, high, track["align"])
        finetune(best, data["train"], args.epochs, lr=args.lr, teacher=model, seed=seed)
        settle_batchnorm(best, data["train"], data["held_out"], SETTLE_BATCHES)  # as compress delivers
        final = rt.compare([original, rt.export(best, x, workdir / "delivered.onnx")], track["shape"], rounds=12)
        macs, params = count_macs_params(best, x)
        rows.append({"budget": budget, "latency_ratio": final.ratios[1], "accuracy": accuracy(best, data["val"]),
                     "macs": macs, "params": params, "pruning_ratio": high})
    return rows


def shared_supernet(work: Path, name: str, model, seed: int, args) -> tuple[str, float]:
    """(directory, seconds) of the track's supernet for `seed`, trained once as `compress` would train it.

    slim and evolution search the same supernet (the sandwich rule, `--supernet-epochs`, this seed);
    each is charged those epochs, but the benchmark trains them once.
    """
    from slimdeploy.analysis import analyse
    from slimdeploy.supernet import Supernet, SupernetTraining, train_supernet

    track = TRACKS[name]
    out = work / name / "supernet" / str(seed)
    if (out / "seconds.json").exists():  # written after the supernet itself
        return str(out), json.loads((out / "seconds.json").read_text())["seconds"]
    started = time.perf_counter()
    x = torch.randn(*track["shape"], generator=torch.Generator().manual_seed(seed))
    net = Supernet(model, x, analyse(model, x), importance="l2", align=track["align"])  # it copies the model
    data = _data(track, seed=seed)
    train_supernet(net, data["train_set"], SupernetTraining(epochs=args.supernet_epochs, lr=args.lr, batch_size=64,
                                                            seed=seed), out=out, resume=out.exists(), say=log)
    seconds = round(time.perf_counter() - started, 1)
    (out / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    return str(out), seconds


def cmd_run(args) -> None:
    from slimdeploy.errors import BudgetMissed
    from slimdeploy.pipeline import compress

    track = TRACKS[args.track]
    budgets = (args.budgets or track["budgets"]).split(",")
    model = load_original(args.work, args.track)
    for seed in args.seeds:
        for method in args.methods:
            results = _results(args.work)
            key = f"{method}/{seed}"
            if key in results.get(args.track, {}).get("runs", {}):
                continue
            log(f"{args.track} {method} seed {seed}")
            workdir = args.work / args.track / method.replace("/", "-") / str(seed)
            workdir.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            if method == "tp-global":
                rows = run_tp_global(track, model, budgets, args, seed, workdir)
                training = {"finetune_epochs": args.epochs}
            else:
                shared = method in ("slim", "evolution")
                training = {"supernet_epochs": args.supernet_epochs if shared else 0,
                            "finetune_epochs": args.epochs - (args.supernet_epochs if shared else 0)}
                extra = {}
                if shared:  # one supernet per seed for both searchers (trained as compress trains it)
                    before = time.perf_counter()
                    extra["supernet"], training["supernet_seconds"] = shared_supernet(
                        args.work, args.track, model, seed, args)
                    started += time.perf_counter() - before  # charged through supernet_seconds, not twice
                try:
                    summary = compress(
                        copy.deepcopy(model), workdir / "out", latency=",".join(budgets), method=method,
                        data=track["data"], seed=seed, align=track["align"], threads=1, samples=args.samples,
                        db=str(args.work / "latency.sqlite"), input_shape=track["shape"], lr=args.lr,
                        supernet_lr=args.lr,
                        search_options=track.get("evolution", EVOLUTION) if method == "evolution" else {},
                        say=lambda text: None, finetune_epochs=training["finetune_epochs"], retries=RETRIES,
                        supernet_epochs=training["supernet_epochs"], **extra)
                except BudgetMissed as exc:  # the budgets met were delivered; the one missed is recorded
                    if getattr(exc, "summary", None) is None:
                        raise
                    summary = exc.summary
                rows = summary["budgets"] if "budgets" in summary else [_row(summary)]
                missed = {m["budget"]: m["reason"] for m in summary.get("missed", [])}
                by_budget = {r["budget"]: r for r in rows}
                rows = [by_budget.get(b) or {"budget": b, "missed": missed.get(b, "not delivered")} for b in budgets]
            results = _results(args.work)
            results.setdefault(args.track, {}).setdefault("runs", {})[key] = {
                "rows": rows, "seconds": round(time.perf_counter() - started, 1), "training": training}
            _save(args.work, results)
            log(f"  {[(r['budget'], round(r.get('accuracy') or 0, 4), round(r.get('latency_ratio') or 0, 3)) for r in rows]}")


def _row(report: dict) -> dict:
    return {"budget": report["budget"]["latency"], "latency_ratio": report["latency_ms"]["ratio"],
            "accuracy": report["accuracy"]["compressed"], "macs": report["macs"]["compressed"],
            "params": report["params"]["compressed"]}


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b between two score lists."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def cmd_ranking(args) -> None:
    """Kendall tau between shared-weight scores and stand-alone fine-tuned accuracy at equal MACs."""
    from slimdeploy.analysis import analyse
    from slimdeploy.channels import ChannelMap
    from slimdeploy.costs import CostModel
    from slimdeploy.inspection import count_macs_params
    from slimdeploy.prune import prune
    from slimdeploy.scoring import original_scorer
    from slimdeploy.supernet import Supernet, SupernetTraining, load_supernet, train_supernet
    from slimdeploy.train import accuracy, finetune

    track = TRACKS[args.track]
    model = load_original(args.work, args.track)
    x = torch.randn(*track["shape"])
    analysis = analyse(model, x)
    costs = CostModel.build(model, x, ChannelMap.build(model, analysis))
    macs0 = count_macs_params(model, x)[0]
    rng = random.Random(7)
    samples = []
    while len(samples) < args.samples:  # random widths at about the same MACs, so the ranking is not trivial
        w = analysis.space.random(rng, track["align"])
        if args.macs_low <= costs.counts(w)[0] / macs0 <= args.macs_high and w not in samples:
            samples.append(w)
    data = _data(track)
    cached = _results(args.work).get(args.track, {}).get("ranking", {})
    if cached.get("widths") == [dict(w.widths) for w in samples] and cached.get("epochs") == args.epochs:
        standalone = cached["standalone"]  # the stand-alone models of an earlier run with the same samples
    else:
        standalone = []
        for i, w in enumerate(samples):
            student = prune(model, w, x, analysis=analysis)
            finetune(student, data["train"], args.epochs, lr=args.lr, teacher=model, seed=0)
            standalone.append(accuracy(student, data["val"]))
            log(f"stand-alone {i + 1}/{len(samples)}: {standalone[-1]:.4f}")
    recal, _ = original_scorer(model, x, analysis, data, "l2")
    out = {"widths": [dict(w.widths) for w in samples], "standalone": standalone,
           "original_recalibrated": [recal(w) for w in samples], "supernet": {}}
    for seed in args.seeds:  # the supernets `run` trained for slim and evolution, where it did
        trained = args.work / args.track / "supernet" / str(seed)
        if (trained / "seconds.json").exists():
            supernet = load_supernet(trained)
        else:
            supernet = Supernet(model, x, analysis, align=track["align"])
            train_supernet(supernet, data["train_set"], SupernetTraining(epochs=args.supernet_epochs, lr=args.lr,
                                                                         seed=seed), say=lambda text: None)
        score = supernet.scorer(data["calibration"], data["held_out"])
        out["supernet"][str(seed)] = [score(w) for w in samples]
    out["tau"] = {"original_recalibrated": kendall_tau(out["original_recalibrated"], standalone),
                  "supernet": [kendall_tau(s, standalone) for s in out["supernet"].values()]}
    results = _results(args.work)
    results.setdefault(args.track, {})["ranking"] = {**out, "epochs": args.epochs, "supernet_epochs": args.supernet_epochs,
                                                     "macs_range": [args.macs_low, args.macs_high]}
    _save(args.work, results)
    log(f"ranking {args.track}: {out['tau']}")


def cmd_refit(args) -> None:
    """A supernet method's delivered widths, pruned from the original and fine-tuned like uniform (`--epochs`).

    Separates the widths a search found from its epoch split: at equal training epochs each supernet
    delivery gets `epochs - supernet_epochs` of fine-tuning, uniform all of them. Not an equal-budget
    comparison (the search's supernet epochs come on top); a diagnostic of where the gap comes from."""
    from slimdeploy.analysis import analyse
    from slimdeploy.delivery import SETTLE_BATCHES
    from slimdeploy.prune import prune
    from slimdeploy.space import Widths
    from slimdeploy.train import accuracy, finetune, settle_batchnorm

    track = TRACKS[args.track]
    model = load_original(args.work, args.track)
    x = torch.randn(*track["shape"])
    analysis = analyse(model, x)
    for budget in (args.budgets or track["budgets"]).split(","):
        for seed in args.seeds:
            key = f"{args.method}/{seed}/{budget}"
            if key in _results(args.work).get(args.track, {}).get("refit", {}):
                continue
            report_path = args.work / args.track / args.method / str(seed) / "out" / budget / "report.json"
            if not report_path.exists():
                log(f"refit {key}: no delivery at {report_path}")
                continue
            report = json.loads(report_path.read_text())
            data = _data(track, seed=seed)  # as compress drew it for this seed
            started = time.perf_counter()
            student = prune(model, Widths.from_json(report["widths"]), x, analysis=analysis)
            finetune(student, data["train"], args.epochs, lr=args.lr, teacher=model, seed=seed)
            settle_batchnorm(student, data["train"], data["held_out"], SETTLE_BATCHES)
            row = {"accuracy": accuracy(student, data["val"]), "delivered": report["accuracy"]["compressed"],
                   "latency_ratio": report["latency_ms"]["ratio"], "epochs": args.epochs,
                   "seconds": round(time.perf_counter() - started, 1)}
            results = _results(args.work)
            results.setdefault(args.track, {}).setdefault("refit", {})[key] = row
            _save(args.work, results)
            log(f"refit {key}: {row}")


def _step_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cmd_costs(args) -> None:
    """Training step cost: plain, supernet sandwich (masking), slicing lower bound; evaluations per minute."""
    import torch.nn.functional as F

    from slimdeploy.analysis import analyse
    from slimdeploy.prune import prune
    from slimdeploy.scoring import original_scorer
    from slimdeploy.supernet import Supernet, sampled_widths, sandwich_step
    from slimdeploy.train import LoopState

    track = TRACKS[args.track]
    model = load_original(args.work, args.track)
    x = torch.randn(*track["shape"])
    data = _data(track)
    batch = next(iter(data["train"]))
    supernet = Supernet(model, x, align=track["align"])
    step = sandwich_step(supernet, 4, 0)
    plain = copy.deepcopy(model).train()
    analysis = analyse(model, x)  # the supernet's own analysis is of its copy of the model
    pruned = [prune(model, w, x, analysis=analysis).train() for w in sampled_widths(supernet, 4, 0, 0)]

    def plain_step(m):
        plain.zero_grad()
        F.cross_entropy(m(batch[0]), batch[1]).backward()

    rows = {"plain": [], "sandwich": [], "slicing_bound": []}
    supernet.train()
    for r in range(args.repeats):  # interleaved, so machine drift hits all three alike
        rows["plain"].append(_step_time(lambda: plain_step(plain), 1))
        rows["sandwich"].append(_step_time(lambda: step(supernet, batch, LoopState(step=r)), 1))
        rows["slicing_bound"].append(sum(_step_time(lambda m=m: plain_step(m), 1) for m in pruned))
    medians = {k: statistics.median(v) for k, v in rows.items()}
    score = supernet.scorer(data["calibration"], data["held_out"])
    rng = random.Random(0)
    widths = [supernet.random_widths(rng) for _ in range(args.evaluations)]
    start = time.perf_counter()
    for w in widths:
        score(w)
    supernet_rate = len(widths) / (time.perf_counter() - start) * 60
    recal, _ = original_scorer(model, x, analysis, data, "l2")
    start = time.perf_counter()
    for w in widths[: max(3, args.evaluations // 3)]:
        recal(w)
    original_rate = max(3, args.evaluations // 3) / (time.perf_counter() - start) * 60
    results = _results(args.work)
    results.setdefault(args.track, {})["costs"] = {
        "step_seconds": medians, "batch_size": int(batch[0].shape[0]), "threads": torch.get_num_threads(),
        "evaluations_per_minute": {"supernet": supernet_rate, "pruned_original": original_rate},
        "held_out": sum(len(b[1]) for b in data["held_out"])}
    _save(args.work, results)
    log(f"costs {args.track}: {results[args.track]['costs']}")


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def render(results: dict) -> str:
    lines = []
    for name, track in results.items():
        spec = TRACKS[name]
        original = track.get("original", {})
        runs = track.get("runs", {})
        if not runs:
            continue
        budgets = [r["budget"] for r in next(iter(runs.values()))["rows"]]
        lines += [f"### {name}: {spec['spec']} on {spec['data']} at {spec['shape'][-1]} px", "",
                  f"Original: {100 * original.get('accuracy', 0):.2f} % test accuracy "
                  f"({original.get('epochs')} epochs). Accuracy in %, mean ± std over seeds; in brackets the "
                  f"delivered models' measured latency ratio (mean). Training epochs after the original: "
                  f"{_training_line(runs)}.", "",
                  "| method | " + " | ".join(budgets) + " | wall time per seed (all budgets) |",
                  "|---|" + "---|" * len(budgets) + "---|"]
        table = {}
        for method in METHODS:
            seeds = [v for k, v in runs.items() if k.split("/")[0] == method]
            if not seeds:
                continue
            cells = []
            for i, budget in enumerate(budgets):
                accs = [s["rows"][i]["accuracy"] for s in seeds if s["rows"][i].get("accuracy") is not None]
                ratios = [s["rows"][i]["latency_ratio"] for s in seeds if s["rows"][i].get("latency_ratio")]
                missed = [r for r in ratios if r > float(budget.rstrip("x"))]
                lost = sum(1 for s in seeds if s["rows"][i].get("missed"))  # measured over after every re-search
                table[(method, budget)] = accs
                if accs:
                    cells.append(f"{_mean_std(accs)} ({statistics.mean(ratios):.3f}"
                                 f"{', missed ' + str(len(missed)) if missed else ''}"
                                 f"{', not delivered ' + str(lost) if lost else ''})")
                else:
                    cells.append(_below_floor([s["rows"][i] for s in seeds]) or
                                 (f"not delivered ({lost} of {len(seeds)})" if lost else
                                  _unreachable_cell([s["rows"][i] for s in seeds])))
            # slim and evolution search one supernet per seed: its training is counted in both
            seconds = statistics.mean(s["seconds"] + s["training"].get("supernet_seconds", 0) for s in seeds)
            lines.append(f"| {method} (n={len(seeds)}) | " + " | ".join(cells) + f" | {seconds / 60:.1f} min |")
        lines += ["", _goal_lines(table, budgets, original.get("accuracy")), ""]
        if track.get("refit"):
            lines += [_refit_line(track["refit"], table), ""]
        if track.get("note"):  # what the run itself cannot say (conditions, what is missing)
            lines += [track["note"], ""]
        if "ranking" in track:
            r = track["ranking"]
            taus = r["tau"]["supernet"]
            lines += [f"Ranking ({len(r['standalone'])} random widths at {r['macs_range'][0]:.2f}–{r['macs_range'][1]:.2f} of "
                      f"the original's MACs; stand-alone = pruned original fine-tuned {r['epochs']} epoch(s), test "
                      f"accuracy): Kendall τ supernet ({r['supernet_epochs']} epochs) vs stand-alone "
                      f"{statistics.mean(taus):.2f} ± {statistics.stdev(taus) if len(taus) > 1 else 0:.2f} over "
                      f"{len(taus)} supernet seeds; BN-recalibrated original (today's greedy score) vs stand-alone "
                      f"{r['tau']['original_recalibrated']:.2f}.", ""]
        if "costs" in track:
            c = track["costs"]
            s = c["step_seconds"]
            lines += [f"Cost (batch {c['batch_size']}, {c['threads']} torch thread(s)): plain training step "
                      f"{1000 * s['plain']:.0f} ms; supernet sandwich step (4 networks, masking) "
                      f"{1000 * s['sandwich']:.0f} ms = {s['sandwich'] / s['plain']:.2f}× plain; slicing's lower bound "
                      f"(the 4 sub-networks physically pruned) {1000 * s['slicing_bound']:.0f} ms = "
                      f"{s['slicing_bound'] / s['plain']:.2f}× plain. Candidate evaluations per minute "
                      f"({c['held_out']} held-out images, BN recalibration on 3 batches): supernet "
                      f"{c['evaluations_per_minute']['supernet']:.0f}, pruned original "
                      f"{c['evaluations_per_minute']['pruned_original']:.0f}.", ""]
    missing = [name for name in TRACKS if not results.get(name, {}).get("runs")]
    if missing:
        names = ", ".join(f"{n} ({TRACKS[n]['spec']})" for n in missing)
        lines += [f"Not run yet: {names}.", ""]
    return "\n".join(lines)


def _refit_line(refit: dict, table: dict) -> str:
    """`refit`'s rows per method and budget, beside what the method delivered and what uniform did."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for key, row in refit.items():
        method, _, budget = key.split("/")
        grouped.setdefault((method, budget), []).append(row)
    parts = []
    for (method, budget), rows in sorted(grouped.items(), key=lambda item: (item[0][0], -float(item[0][1][:-1]))):
        uniform = table.get(("uniform", budget))
        beside = f"as delivered {_mean_std([r['delivered'] for r in rows])}" + \
            (f", uniform {_mean_std(uniform)}" if uniform else "")
        parts.append(f"{method} at {budget}: {_mean_std([r['accuracy'] for r in rows])} (n={len(rows)}; {beside})")
    epochs = sorted({r["epochs"] for r in refit.values()})
    return (f"Widths apart from the epoch split (`refit`: the delivered widths pruned from the original and fine-tuned "
            f"{'/'.join(map(str, epochs))} epochs as uniform is; a diagnostic, not an equal training budget, since the "
            f"supernet's epochs come on top): " + "; ".join(parts) + ".")


def _unreachable_cell(rows: list[dict]) -> str:
    lowest = [r["lowest_ratio"] for r in rows if r.get("lowest_ratio")]
    return f"unreachable (lowest measured {min(lowest):.3f}x)" if lowest else "unreachable"


def _below_floor(rows: list[dict]) -> str | None:
    """The cell for a budget every seed's search found below the model's floor (compress's own refusal)."""
    floors = [re.search(r"the lowest latency the search reached is ([0-9.]+)x", r.get("missed") or "") for r in rows]
    if not rows or not all(floors):
        return None
    low, high = (f"{v:.2f}x" for v in (min(float(m.group(1)) for m in floors), max(float(m.group(1)) for m in floors)))
    return f"unreachable: the search's floor is {low if low == high else low + '–' + high} ({len(rows)} of {len(rows)})"


def _training_line(runs: dict) -> str:
    seen = {}
    for key, run in runs.items():
        seen.setdefault(key.split("/")[0], run["training"])
    return "; ".join(f"{m}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in t.items()
                                                          if v and k.endswith("epochs")) for m, t in seen.items())


def _goal_lines(table: dict, budgets: list[str], original: float | None) -> str:
    """Per budget: uniform's loss against the original, and what the best supernet method recovers of it."""
    if original is None:
        return ""
    parts = []
    for budget in budgets:
        uniform = table.get(("uniform", budget))
        if not uniform:
            continue
        u = statistics.mean(uniform)
        best_method, best = max(((m, statistics.mean(table[(m, budget)])) for m in ("slim", "evolution")
                                 if table.get((m, budget))), key=lambda t: t[1], default=(None, None))
        if best is None:
            continue
        loss = original - u
        recovered = f"{(best - u) / loss:.0%} of the loss recovered" if loss > 1e-9 else "uniform loses nothing"
        parts.append(f"{budget}: uniform loses {100 * loss:.2f} points; {best_method} is {100 * (best - u):+.2f} points "
                     f"over uniform ({recovered})")
    return "Goal check — " + "; ".join(parts) + "." if parts else ""


def cmd_render(args) -> None:
    from results import write_section

    markdown = render(_results(args.work))
    write_section(SECTION, "### Accuracy at equal measured latency and equal training epochs (issue 7)\n\n" + markdown,
                  command=args.command or "python benchmarks/tradeoff.py render")
    print(markdown)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command_name", required=True)
    for name, fn in (("original", cmd_original), ("run", cmd_run), ("ranking", cmd_ranking), ("costs", cmd_costs),
                     ("refit", cmd_refit), ("render", cmd_render)):
        p = sub.add_parser(name)
        p.set_defaults(func=fn)
        p.add_argument("--work", type=Path, default=Path("/tmp/slimdeploy-tradeoff"))
        if name != "render":
            p.add_argument("--track", choices=sorted(TRACKS), default="resnet20")
        if name in ("run", "ranking", "refit"):
            p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
            p.add_argument("--epochs", type=int, default=3, help="training epochs after the original, every method")
            p.add_argument("--supernet-epochs", type=int, default=2)
            p.add_argument("--lr", type=float, default=0.01)
        if name in ("run", "refit"):
            p.add_argument("--budgets", help="comma-separated, default per track")
        if name == "refit":
            p.add_argument("--method", default="evolution", choices=("slim", "evolution"))
        if name == "run":
            p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
            p.add_argument("--samples", type=int, default=24, help="latency-model samples")
            p.add_argument("--quiet", type=Path, help="a directory shared with other benchmark processes on this "
                           "machine: each latency measurement pauses them (benchmarks/quiet.py)")
        if name == "ranking":
            p.add_argument("--samples", type=int, default=10)
            p.add_argument("--macs-low", type=float, default=0.3)
            p.add_argument("--macs-high", type=float, default=0.5)
        if name == "costs":
            p.add_argument("--repeats", type=int, default=15)
            p.add_argument("--evaluations", type=int, default=30)
        if name == "render":
            p.add_argument("--command", help="the command line to record in RESULTS.md")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if getattr(args, "quiet", None):
        from quiet import measure_alone
        measure_alone(args.quiet)
    args.func(args)


if __name__ == "__main__":
    main()
