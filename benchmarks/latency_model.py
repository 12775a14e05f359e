"""Fitted latency model vs the MACs-proportional line, on held-out width configurations (issue 8).

    python benchmarks/latency_model.py --set dev --threads 1,2 --json /tmp/lm-dev.json      # the development set
    python benchmarks/latency_model.py --set eval --threads 1,2 --json /tmp/lm-eval.json    # the evaluation set
    python benchmarks/latency_model.py --set eval --runtime torch --threads 1 --json /tmp/lm-torch.json
    python benchmarks/latency_model.py --models torchvision:resnet18@96 --threads 1 --samples 24   # any model@px
    python benchmarks/latency_model.py --models slimdeploy.models:cifar_resnet20@28 --align 4 --no-write  # off-block
    python benchmarks/latency_model.py --set dev --db-dir /tmp/lm-db --json /tmp/lm-refit.json --no-write  # re-fit
    python benchmarks/latency_model.py --from-json /tmp/lm-dev.json,/tmp/lm-eval.json   # re-render RESULTS.md only
    python benchmarks/latency_model.py --from-json /tmp/lm-refit.json --costs-from /tmp/lm-dev.json  # re-fit, costs of the measuring run

Two sets of models: `dev`, the models the latency model was designed on (ResNet-18, MobileNetV2,
EfficientNet-Lite0 at 224 px, ResNet-18 at a small input), and `eval`, models across families that
were not looked at while designing it (residual, grouped convolutions, depthwise with
squeeze-excitation, dense concatenation, ConvNeXt, a ViT, shuffles; at 224 px and at small inputs).
Only `dev` may be used for tuning; RESULTS.md and README report `eval`.

Per model and thread count: `build_profile` (the code behind `slimdeploy profile`) with a fresh
latency database (or one kept with `--db-dir`, which then measures nothing and only re-fits): N
covering configurations (or `--sampling adaptive`) + the full and the smallest are pruned,
exported and timed interleaved with the full model, with per-node times where
the runtime has them; every 4th configuration is held out and up to six held-out ones are measured
again for the noise floor (σ of one figure). Then the same profile is built again on the same
database, to show that nothing is measured twice. Rows are appended to the JSON file as they
complete; a re-run skips rows already there. Each set has its own RESULTS.md section
(`latency_model_dev`, `latency_model_eval`; `_torch` appended for the torch runtime).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import reading_text, write_section  # noqa: E402

DEV = ["torchvision:resnet18@224", "torchvision:mobilenet_v2@224", "slimdeploy.pretrained:efficientnet_lite0@224",
       "torchvision:resnet18@64"]
EVAL = ["torchvision:resnet34@128", "torchvision:regnet_x_400mf@224", "torchvision:resnext50_32x4d@96",
        "torchvision:mobilenet_v3_small@224", "torchvision:efficientnet_b0@160", "torchvision:densenet121@96",
        "torchvision:convnext_tiny@64", "timm:vit_tiny_patch16_224@224", "torchvision:shufflenet_v2_x1_0@224",
        "torchvision:mnasnet1_0@64", "torchvision:googlenet@96"]
SETS = {"dev": DEV, "eval": EVAL}


def run_one(item: str, samples: int, threads: int, runtime_name: str, sampling: str, align: int = 8,
            db_dir: str | None = None) -> dict:
    import numpy as np
    import torch

    from slimdeploy.analysis import analyse
    from slimdeploy.latency.db import LatencyDB
    from slimdeploy.latency.profile import build_profile
    from slimdeploy.runtimes import get_runtime
    from slimdeploy.zoo import build

    spec, _, px = item.rpartition("@")
    size = int(px)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(spec).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    analysis = analyse(model, x)
    runtime = get_runtime(runtime_name, {"threads": threads})
    with tempfile.TemporaryDirectory() as tmp, LatencyDB(_db_path(db_dir or tmp, item, runtime_name, threads,
                                                                align)) as db:
        say = lambda text: print(f"[{item} {threads}t] {text}", file=sys.stderr, flush=True)  # noqa: E731
        first = build_profile(model, x, analysis, runtime, samples=samples, db=db, say=say, sampling=sampling,
                              align=align)
        start = time.perf_counter()
        second = build_profile(model, x, analysis, runtime, samples=samples, db=db, sampling=sampling, align=align)
        second_s = time.perf_counter() - start
        figures = db.get_many(analysis.space.fingerprint, runtime.name, runtime.options,
                              first.validation["device_fingerprint"], kind="sample")
        spread = float(np.median([f.payload["ratio_iqr"] / f.payload["ratio"] for f in figures]))
    same = first.model.predict({}) == second.model.predict({})
    flat = sorted(g for g, s in first.staircase.items() if s["saves_nothing"])
    return {"model": spec, "item": item, "groups": len(analysis.space.groups), "threads": threads, "size": size,
            "runtime": runtime_name, "sampling": sampling, "align": align,
            "validation": first.validation, "cost": first.cost, "second_cost": {**second.cost, "seconds": second_s},
            "second_identical": same, "groups_saving_nothing": flat, "ratio_spread": spread}


def _db_path(folder: str, item: str, runtime: str, threads: int, align: int) -> Path:
    """One latency database per model, runtime, thread count and alignment (kept with --db-dir)."""
    name = "".join(c if c.isalnum() else "-" for c in item)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder) / f"{name}-{runtime}-{threads}t-a{align}.sqlite"


def _pct(v, digits=0) -> str:
    return "–" if v is None else f"{v:.{digits}%}"


def render(rows: list[dict], note: str = "") -> str:
    lines = ["Held-out configurations (every 4th of the sampled ones), batch 1. *ours*: per-node cost model fitted "
             "on the profiler's node times (ORT), calibrated per node kind on end-to-end figures (per-group slopes "
             "where the runtime has no node times); *MACs line*: latency = a·MACs + b fitted on the same training "
             "configurations. Each figure is the candidate/full-model ratio measured interleaved, times the full "
             "model's median. *σ*: the noise floor, one figure's spread from held-out configurations measured "
             "twice; *±5% corr.*: within ±5% widened by σ in quadrature (σ above 2%); *model rms*: the held-out "
             "rms error with σ taken out.", "",
             "| model | px | groups | threads | ours ±5% | ±5% corr. | ours ±10% | ours MAPE | model rms | σ | "
             "ours Spearman | MACs ±5% | MACs ±10% | MACs MAPE | train/test | measured | minutes | 2nd run measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v, b = r["validation"], r["validation"].get("macs_baseline", {})
        c, c2 = r["cost"], r["second_cost"]
        sigma = (v.get("noise_floor") or {}).get("sigma")
        lines.append(
            f"| {r['model']} | {r['size']} | {r['groups']} | {r['threads']} | {_pct(v['within_5pct'])} | "
            f"{_pct(v.get('within_5pct_corrected'))} | {_pct(v['within_10pct'])} | {_pct(v['mape'], 1)} | "
            f"{_pct(v.get('rms_error_model'), 1)} | {_pct(sigma, 1)} | {v['spearman']:.3f} | "
            f"{_pct(b.get('within_5pct'))} | {_pct(b.get('within_10pct'))} | {_pct(b.get('mape'), 1)} | "
            f"{v['n_train']}/{v['n_test']} | {c['measured']} | {c['seconds'] / 60:.1f} | {c2['measured']} |")
    summary = []
    for threads in sorted({r["threads"] for r in rows}):
        part = [r["validation"] for r in rows if r["threads"] == threads]
        n = sum(v["n_test"] for v in part)
        ours = sum(v["within_5pct"] * v["n_test"] for v in part) / n
        corr = sum(v.get("within_5pct_corrected", v["within_5pct"]) * v["n_test"] for v in part) / n
        macs = sum(v.get("macs_baseline", {}).get("within_5pct", 0) * v["n_test"] for v in part) / n
        beaten = sum(v["mape"] <= v.get("macs_baseline", {}).get("mape", float("inf")) for v in part)
        summary.append(f"{threads} thread(s): {ours:.0%} of {n} held-out configurations within ±5% "
                       f"({corr:.0%} noise-corrected), MACs line {macs:.0%}; MAPE at or below the MACs line's on "
                       f"{beaten} of {len(part)} models")
    lines += ["", "Pooled: " + "; ".join(summary) + "."]
    warned = [f"{r['model']}@{r['size']} {r['threads']}t" for r in rows if r["validation"].get("noise_warning")]
    if warned:
        lines += ["", "Noise makes ±5% unmeasurable (σ > 5%/1.96) for: " + ", ".join(warned) + "."]
    chosen = [f"{r['model']}@{r['size']} {r['threads']}t: {r['validation']['features']}" for r in rows
              if r["validation"].get("features")]
    if chosen:
        lines += ["", "Without node times, the feature set cross-validation chose: " + "; ".join(chosen) + "."]
    flat = [f"{r['model']}: {', '.join(r['groups_saving_nothing'])}" for r in rows if r["groups_saving_nothing"]]
    if flat:
        lines += ["", "Groups where the fitted staircase says pruning saves < 0.5% of the latency: " + "; ".join(flat)]
    if note:
        lines += ["", note]
    return "\n".join(lines)


def _read(paths: str) -> list[dict]:
    return [json.loads(line) for p in paths.split(",") if Path(p).exists()
            for line in Path(p).read_text().splitlines() if line.strip()]


def _with_costs(rows: list[dict], measuring: list[dict]) -> list[dict]:
    """Rows re-fitted on a kept database (which measured nothing) with the measuring run's costs."""
    costs = {(r.get("item"), r["threads"], r.get("runtime", "onnxruntime")): r["cost"] for r in measuring}
    return [{**r, "cost": costs.get((r.get("item"), r["threads"], r.get("runtime", "onnxruntime")), r["cost"])}
            for r in rows]


def section(rows: list[dict]) -> str:
    sets = {s for r in rows for s, items in SETS.items() if r.get("item") in items} or {"other"}
    runtime = {r.get("runtime", "onnxruntime") for r in rows}
    return "latency_model_" + "_".join(sorted(sets)) + ("" if runtime == {"onnxruntime"} else "_" + "_".join(sorted(runtime)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), help="the development or the evaluation set")
    parser.add_argument("--models", nargs="+", help="spec@px items instead of a set")
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--sampling", default="covering", choices=("covering", "adaptive"))
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "torch"))
    parser.add_argument("--align", type=int, default=8, help="widths are multiples of this (4: off ORT's channel "
                                                             "block, where the model is known to miss)")
    parser.add_argument("--json", default="/tmp/slimdeploy-latency-model.json")
    parser.add_argument("--db-dir", help="keep each model's latency database here; a re-run (with another --json) "
                                         "then re-fits on the stored figures without measuring: how a change to "
                                         "the latency model is tried on the development set")
    parser.add_argument("--from-json", help="render RESULTS.md from earlier runs' JSON only (comma-separated)")
    parser.add_argument("--costs-from", help="with --from-json: take the measured count and minutes from these "
                                             "runs' rows (comma-separated), for rows re-fitted on a kept database")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    parser.add_argument("--note", default="", help="text added under the table, or @FILE for a file's text")
    args = parser.parse_args()
    args.note = reading_text(args.note)
    if args.from_json:
        rows = _read(args.from_json)
        if args.costs_from:
            rows = _with_costs(rows, _read(args.costs_from))
    else:
        items = args.models or SETS[args.set or "dev"]
        rows = _read(args.json)
        done = {(r.get("item"), r["threads"], r.get("runtime", "onnxruntime")) for r in rows}
        for threads in [int(t) for t in args.threads.split(",")]:
            for item in items:
                if (item, threads, args.runtime) in done:
                    continue
                row = run_one(item, args.samples, threads, args.runtime, args.sampling, args.align, args.db_dir)
                rows.append(row)
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    command = "python " + " ".join(["benchmarks/latency_model.py"] + sys.argv[1:])
    if not args.no_write:
        write_section(section(rows), render(rows, args.note), command=command)
    print(render(rows, args.note))


if __name__ == "__main__":
    main()
