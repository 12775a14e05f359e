"""Fitted latency model vs the MACs-proportional line, on held-out width configurations.

    python benchmarks/latency_model.py                       # resnet18, mobilenet_v2, Lite0 at 224, 1 thread
    python benchmarks/latency_model.py --samples 80 --threads 2 --models torchvision:resnet18
    python benchmarks/latency_model.py --from-json /tmp/lm.json   # re-render RESULTS.md only

Each thread count has its own section in RESULTS.md (`latency_model_threads_N`).

Per model: `build_profile` (the code behind `slimdeploy profile`) on ONNX Runtime CPU with a fresh
latency database: N covering configurations + the full and the smallest are pruned, exported and
timed interleaved with the full model, with per-node times from ORT's profiler; every 4th
configuration is held out. Then the same profile is built again on the same database, to show
that nothing is measured twice. Rows are appended to the JSON file as they complete.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import write_section  # noqa: E402

MODELS = ["torchvision:resnet18", "torchvision:mobilenet_v2", "slimdeploy.pretrained:efficientnet_lite0"]


def run_one(spec: str, samples: int, threads: int, size: int) -> dict:
    import numpy as np
    import torch

    from slimdeploy.analysis import analyse
    from slimdeploy.latency.db import LatencyDB
    from slimdeploy.latency.profile import build_profile
    from slimdeploy.runtimes import get_runtime
    from slimdeploy.zoo import build

    torch.set_num_threads(1)
    model = build(spec).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    analysis = analyse(model, x)
    runtime = get_runtime("onnxruntime", {"threads": threads})
    with tempfile.TemporaryDirectory() as tmp, LatencyDB(Path(tmp) / "latency.sqlite") as db:
        say = lambda text: print(f"[{spec}] {text}", file=sys.stderr, flush=True)  # noqa: E731
        first = build_profile(model, x, analysis, runtime, samples=samples, db=db, say=say)
        start = time.perf_counter()
        second = build_profile(model, x, analysis, runtime, samples=samples, db=db)
        second_s = time.perf_counter() - start
        figures = db.get_many(analysis.space.fingerprint, runtime.name, runtime.options,
                              first.validation["device_fingerprint"], kind="sample")
        spread = float(np.median([f.payload["ratio_iqr"] / f.payload["ratio"] for f in figures]))
    same = first.model.predict({}) == second.model.predict({})
    flat = sorted(g for g, s in first.staircase.items() if s["saves_nothing"])
    return {"model": spec, "groups": len(analysis.space.groups), "threads": threads, "size": size,
            "validation": first.validation, "cost": first.cost, "second_cost": {**second.cost, "seconds": second_s},
            "second_identical": same, "groups_saving_nothing": flat, "ratio_spread": spread}


def render(rows: list[dict], note: str = "") -> str:
    lines = ["Held-out configurations (every 4th of the sampled ones), ONNX Runtime CPU, batch 1. "
             "*ours*: per-node cost model fitted on ORT profiler node times, calibrated per node kind on "
             "end-to-end figures; *MACs line*: latency = a·MACs + b fitted on the same training configurations. "
             "Each figure is the candidate/full-model ratio measured interleaved, times the full model's median.", "",
             "| model | groups | threads | px | ours ±5% | ours ±10% | ours MAPE | ours Spearman | MACs ±5% | MACs ±10% "
             "| MACs MAPE | MACs Spearman | train/test | measured | minutes | 2nd run: measured / from DB / s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v, b = r["validation"], r["validation"].get("macs_baseline", {})
        c, c2 = r["cost"], r["second_cost"]
        lines.append(
            f"| {r['model']} | {r['groups']} | {r['threads']} | {r['size']} | {v['within_5pct']:.0%} | "
            f"{v['within_10pct']:.0%} | {v['mape']:.1%} | {v['spearman']:.3f} | {b.get('within_5pct', 0):.0%} | "
            f"{b.get('within_10pct', 0):.0%} | {b.get('mape', 0):.1%} | {b.get('spearman', 0):.3f} | "
            f"{v['n_train']}/{v['n_test']} | {c['measured']} | {c['seconds'] / 60:.1f} | "
            f"{c2['measured']} / {c2['from_database']} / {c2['seconds']:.1f} |")
    flat = [f"{r['model']}: {', '.join(r['groups_saving_nothing'])}" for r in rows if r["groups_saving_nothing"]]
    if flat:
        lines += ["", "Groups where the fitted staircase says pruning saves < 0.5% of the latency: " + "; ".join(flat)]
    spread = [f"{r['model']}: {r['ratio_spread']:.1%}" for r in rows if r.get("ratio_spread") is not None]
    if spread:
        lines += ["", "Median per-round spread (IQR/median) of the measured ratios, i.e. the noise of the truth "
                      "itself: " + "; ".join(spread)]
    if note:
        lines += ["", note]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--samples", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", default="/tmp/slimdeploy-latency-model.json")
    parser.add_argument("--from-json", help="render RESULTS.md from an earlier run's JSON only")
    parser.add_argument("--note", default="", help="a sentence added under the table (e.g. an earlier run's figures)")
    args = parser.parse_args()
    if args.from_json:
        rows = [json.loads(line) for line in Path(args.from_json).read_text().splitlines() if line.strip()]
    else:
        Path(args.json).write_text("")
        rows = []
        for spec in args.models:
            row = run_one(spec, args.samples, args.threads, args.size)
            rows.append(row)
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    command = "python " + " ".join(["benchmarks/latency_model.py"] + sys.argv[1:])
    threads = sorted({r["threads"] for r in rows})
    write_section(f"latency_model_threads_{'_'.join(map(str, threads))}", render(rows, args.note), command=command)
    print(render(rows, args.note))


if __name__ == "__main__":
    main()
