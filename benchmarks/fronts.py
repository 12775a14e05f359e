"""Front quality at equal training cost: Slim vs TwoStage vs PareCO vs CafeNet; latency vs MACs objective; cost.

    python benchmarks/fronts.py                                   # 3 seeds, writes RESULTS.md sections
    python benchmarks/fronts.py --seeds 0 --epochs 1 --quick      # a smoke run (no RESULTS.md)
    python benchmarks/fronts.py --seeds 1 --json /tmp/f1.json --quick     # one seed per process ...
    python benchmarks/fronts.py --from-json /tmp/f0.json,/tmp/f1.json,/tmp/f2.json   # ... merged, rendered
    python benchmarks/fronts.py --track lite0                     # the EfficientNet-Lite0 track

Tracks (shared_bench.py): CIFAR-style ResNet-20 at 3×28×28 trained on 3,000 Fashion-MNIST images,
or the ImageNet-pretrained EfficientNet-Lite0 at 64 px fine-tuned on them; the Lite0 track writes
its own RESULTS.md sections (`fronts-lite0`, ...).
Every method trains its shared weights for the same epochs with four networks per step (full,
narrowest, two sampled), then searches each budget on the fitted latency model (ONNX Runtime,
1 thread); each delivered model is extracted, fine-tuned the same epochs with distillation from
the original, and measured interleaved against the original on ORT. The front is every
candidate a method scored on its shared weights (held-out accuracy after BatchNorm
recalibration) against predicted latency; its area is `front_area` from the tightest latency
reachable to 1.0× (the mean best accuracy over that range of budgets).

The MACs-objective run is PareCO with the MACs ratio as its cost in training and in its front;
both PareCO fronts (latency and MACs objective) are then re-measured on ORT and their areas
compared on measured latency.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from shared_bench import TRACKS, Bench, mean_std, say  # noqa: E402

BUDGETS = {"resnet20": "0.5,0.7", "lite0": "0.3,0.5"}  # lite0: uniform width loses more there

METHODS = {
    "slim-uniform": {"visits": 24, "refine": 3},
    "twostage": {"visits": 24, "prior_points": 8, "raw_samples": 500, "refine": 3},
    "pareco": {"visits": 24, "prior_points": 8, "raw_samples": 500, "refine": 3},
    "cafenet": {"population": 12, "generations": 3, "parents": 5, "placements": 2, "zone": 1},
}


def run_method(bench: Bench, method: str, seed: int, budgets: list[float], epochs: int, ft_epochs: int) -> dict:
    from slimdeploy.search import get_searcher

    options = METHODS[method]
    shared, train_s = bench.provide(method, options, epochs, seed)
    score = functools.cache(shared.scorer(bench.calibration, bench.held_out))
    searcher = get_searcher(method, **options)
    evaluated, delivered, search_s = {}, [], 0.0
    for limit in budgets:
        problem = bench.problem(shared, score, limit)
        started = time.perf_counter()
        result = searcher.search(problem)
        search_s += time.perf_counter() - started
        for c in result.evaluated:
            evaluated[c.widths] = c
        out = bench.deliver(shared, result.widths, ft_epochs, seed)
        delivered.append({"budget": limit, "predicted": result.best.costs["latency"], "score": result.best.score,
                          **out})
        say(f"{method} seed {seed} budget {limit}: accuracy {out['accuracy']:.4f}, measured {out['measured']:.3f}x")
    points = [(c.costs["latency"], c.score) for c in evaluated.values()]
    summary = shared.summary()
    row = {"method": method, "seed": seed, "train_seconds": round(train_s, 1), "search_seconds": round(search_s, 1),
           "gp_seconds_per_round": summary.get("gp_seconds_per_round"), "gp_rounds": summary.get("gp_rounds"),
           "points": points, "delivered": delivered}
    return row, (shared, train_s)


def objective_run(bench: Bench, seed: int, epochs: int, latency_run=None) -> list[dict]:
    """PareCO trained on latency (the main run's, when given) and on MACs: each front re-measured on ORT."""
    from slimdeploy.space import Widths

    rows = []
    for objective in ("latency", "macs"):
        if objective == "latency" and latency_run is not None:
            shared, train_s = latency_run
        else:
            shared, train_s = bench.provide("pareco", METHODS["pareco"], epochs, seed, objective)
        score = shared.scorer(bench.calibration, bench.held_out)
        own = bench.latency if objective == "latency" else bench.macs_ratio
        fp = bench.analysis.space.fingerprint
        cands = [Widths(fp, w) for w in shared.candidates(0.9)]
        scored = [{"widths": w, "own": own(w), "score": score(w)} for w in cands]
        front = _front(scored)
        for p in front:
            p["measured"] = bench.measured.ratio(p["widths"])
            p["predicted"] = bench.latency(p["widths"])
            p["macs"] = bench.macs_ratio(p["widths"])
        rows.append({"objective": objective, "seed": seed, "train_seconds": round(train_s, 1),
                     "front": [{k: (dict(v.widths) if k == "widths" else v) for k, v in p.items()} for p in front]})
        say(f"objective {objective} seed {seed}: {len(front)} front points re-measured")
    return rows


def _front(scored: list[dict]) -> list[dict]:
    from slimdeploy.search import non_dominated

    return [scored[i] for i in non_dominated([(p["own"], -p["score"]) for p in scored])]


def render(rows: list[dict], objective_rows: list[dict], budgets: list[float], lowest: float,
           original: float, track: str = "resnet20") -> dict[str, str]:
    from slimdeploy.search import front_area

    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    head = "| method | front area (held-out acc., " + f"{lowest:.2f}x–1.0x)" + " | " + \
        " | ".join(f"delivered acc. at {b}x (measured ratio)" for b in budgets) + " |"
    lines = [f"Original {TRACKS[track]['title']}: {original:.4f} accuracy on the validation subset "
             "(Fashion-MNIST test images).", "",
             head, "|---|---:|" + "---:|" * len(budgets)]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        area = mean_std([front_area(r["points"], lowest, 1.0) for r in mine])
        cells = []
        for b in budgets:
            acc = [d["accuracy"] for r in mine for d in r["delivered"] if d["budget"] == b]
            ratio = [d["measured"] for r in mine for d in r["delivered"] if d["budget"] == b]
            cells.append(f"{mean_std(acc)} ({mean_std(ratio)[:5]}x)")
        lines.append(f"| {m} | {area} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in rows})
    lines += ["", f"Seeds {seeds}; mean ± std over seeds."]
    cost = ["| method | shared-weight training (s) | search, all budgets (s) | GP time per round (s) | GP rounds |",
            "|---|---:|---:|---:|---:|"]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        cost.append(f"| {m} | {mean_std([r['train_seconds'] for r in mine])} | "
                    f"{mean_std([r['search_seconds'] for r in mine])} | "
                    f"{mean_std([r['gp_seconds_per_round'] for r in mine])} | "
                    f"{mean_std([r['gp_rounds'] for r in mine])} |")
    obj = ["| PareCO objective | front points | front area on ORT-measured latency | mean abs(predicted − measured) "
           "latency of its front | training (s) |", "|---|---:|---:|---:|---:|"]
    low = min((p["measured"] for r in objective_rows for p in r["front"]), default=lowest)
    for objective in ("latency", "macs"):
        mine = [r for r in objective_rows if r["objective"] == objective]
        if not mine:
            continue
        areas = [front_area([(p["measured"], p["score"]) for p in r["front"]], low, 1.0) for r in mine]
        errors = [sum(abs(p["predicted"] - p["measured"]) for p in r["front"]) / len(r["front"]) for r in mine]
        obj.append(f"| {objective} | {mean_std([len(r['front']) for r in mine])} | {mean_std(areas)} | "
                   f"{mean_std(errors)} | {mean_std([r['train_seconds'] for r in mine])} |")
    obj += ["", f"Areas from {low:.3f}x (the lowest measured front point of either run) to 1.0x."]
    prefix = "fronts" if track == "resnet20" else f"fronts-{track}"
    return {prefix: "\n".join(lines), f"{prefix}-cost": "\n".join(cost), f"{prefix}-objective": "\n".join(obj)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--track", choices=sorted(TRACKS), default="resnet20")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--budgets", help="comma-separated latency ratios (default: 0.5,0.7; lite0: 0.3,0.5)")
    p.add_argument("--epochs", type=int, default=1, help="shared-weight training epochs, every method")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--n-fit", type=int, default=512, help="training images the methods train and fine-tune on")
    p.add_argument("--n-held", type=int, default=300, help="training images held out to score candidates on")
    p.add_argument("--n-val", type=int, default=1000, help="test images the delivered accuracy is measured on")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--work", default="/tmp/bench-fronts")
    p.add_argument("--no-objective", action="store_true", help="skip the latency-vs-MACs objective runs")
    p.add_argument("--quick", action="store_true", help="do not write RESULTS.md")
    p.add_argument("--command", help="the command line to record in RESULTS.md (when rendering merged runs)")
    p.add_argument("--json", help="where this run's rows go (default WORK/fronts.json); a rerun skips rows done")
    p.add_argument("--from-json", help="re-render RESULTS.md from previous runs' JSON files (comma-separated)")
    p.add_argument("--reading", default="", help="what the tables say, added under the front table (@FILE reads a file)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    budgets = [float(b) for b in (args.budgets or BUDGETS[args.track]).split(",")]
    work = Path(args.work)
    path = Path(args.json) if args.json else work / ("fronts-quick.json" if args.quick else "fronts.json")
    if args.from_json:  # several runs (e.g. one process per seed) merged
        parts = [json.loads(Path(f).read_text()) for f in args.from_json.split(",")]
        state = {"track": "resnet20", **parts[0], "rows": [r for p in parts for r in p["rows"]],
                 "objective": [r for p in parts for r in p["objective"]]}
    else:
        bench = Bench(work, n_fit=args.n_fit, n_held=args.n_held, n_val=args.n_val, batch=args.batch,
                      track=args.track)
        state = {"track": args.track, "rows": [], "objective": [], "lowest": bench.lowest,
                 "original": bench.original_accuracy, "budgets": budgets}
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("budgets") == budgets and old.get("track", "resnet20") == args.track:
                state.update(rows=old["rows"], objective=old["objective"])
        done = {(r["method"], r["seed"]) for r in state["rows"]}
        for seed in [int(s) for s in args.seeds.split(",")]:
            latency_run = None
            for method in args.methods.split(","):
                if (method, seed) in done:
                    continue
                row, shared = run_method(bench, method, seed, budgets, args.epochs, args.finetune_epochs)
                latency_run = shared if method == "pareco" else latency_run
                state["rows"].append(row)
                path.write_text(json.dumps(state, indent=1, default=str))
            if not args.no_objective and not any(r["seed"] == seed for r in state["objective"]):
                state["objective"] += objective_run(bench, seed, args.epochs, latency_run)
                path.write_text(json.dumps(state, indent=1, default=str))
    sections = render(state["rows"], state["objective"], state["budgets"], state["lowest"], state["original"],
                      state["track"])
    from results import reading_text

    reading = reading_text(args.reading)
    if reading:
        sections[next(iter(sections))] += "\n\n" + reading
    for name, text in sections.items():
        print(f"\n## {name}\n{text}")
    if not args.quick:
        from results import write_section

        command = args.command or "python benchmarks/fronts.py " + " ".join(sys.argv[1:])
        for name, text in sections.items():
            write_section(name, text, command=command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
