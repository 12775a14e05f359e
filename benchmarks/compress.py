"""slimdeploy.compress to a measured latency budget, against torch-pruning's uniform pruning at the same MACs.

    python benchmarks/compress.py --size 128 --threads 1              # 5 models x 0.7x,0.5x,0.3x
    python benchmarks/compress.py --models torchvision:resnet18 --budgets 0.5x --json /tmp/c.json
    python benchmarks/compress.py --from-json /tmp/c.json             # re-render RESULTS.md only

Per model and budget: `compress(model, latency=budget, method="uniform")` with no data (so no
fine-tuning); we record the delivered latency ratio (original vs compressed, interleaved on ONNX
Runtime CPU), the MACs and params ratios, wall seconds and the number of latency measurements
the search used. Then the baseline: torch-pruning's own uniform pruning (BasePruner,
GroupMagnitudeImportance(p=2), round_to=8, the final classifier Linear ignored) at a uniform
pruning_ratio found by bisection so that its MACs ratio (slimdeploy's `count_macs_params`)
matches the compressed model's within 2%; the original and tp's model are exported and compared
interleaved with `compare_onnx([original.onnx, tp.onnx], threads=T)`.

Every row is appended to the JSON file as it completes (a partial run still gives a table); the
`compress` section of benchmarks/RESULTS.md is written at the end.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SECTION = "compress"
MODELS = ("torchvision:resnet18", "torchvision:mobilenet_v2", "torchvision:efficientnet_b0",
          "torchvision:regnet_x_400mf", "slimdeploy.pretrained:efficientnet_lite0")
BUDGETS = ("0.7x", "0.5x", "0.3x")


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)[:300]


def _last_linear(model):
    import torch.nn as nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]  # the final classifier


def tp_uniform(model, x, target_macs_ratio, macs0, tol=0.02, max_iter=14, say=print):
    """torch-pruning's uniform pruning whose MACs ratio matches `target_macs_ratio` (bisection on the ratio)."""
    import torch
    import torch_pruning as tp
    from slimdeploy.inspection import count_macs_params

    pruner_cls = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MetaPruner

    def run(ratio):
        m = copy.deepcopy(model).eval()
        pruner = pruner_cls(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                            ignored_layers=_last_linear(m), round_to=8)
        with torch.no_grad():
            pruner.step()
        macs, params = count_macs_params(m, x)
        return m, macs / macs0, params

    lo, hi = 0.0, 0.95
    best = None
    for i in range(max_iter):
        mid = (lo + hi) / 2
        m, r, p = run(mid)
        say(f"  tp bisection {i}: pruning_ratio={mid:.4f} -> MACs ratio {r:.4f} (target {target_macs_ratio:.4f})")
        if best is None or abs(r - target_macs_ratio) < abs(best[1] - target_macs_ratio):
            best = (m, r, p, mid)
        if abs(r - target_macs_ratio) <= tol * target_macs_ratio or hi - lo < 0.004:
            break  # matched, or round_to=8 leaves no ratio in between
        if r > target_macs_ratio:
            lo = mid
        else:
            hi = mid
    return best


def run_one(spec, budget, size, threads, work: Path, cache: dict, say=print) -> dict:
    import torch
    from slimdeploy.checkpoint import load_model
    from slimdeploy.errors import SlimdeployError
    from slimdeploy.export import export_onnx
    from slimdeploy.inspection import count_macs_params
    from slimdeploy.latency.onnx_files import compare_onnx
    from slimdeploy.pipeline import compress

    row = {"model": spec, "budget": budget, "size": size, "threads": threads}
    shape = (1, 3, size, size)
    model = load_model(spec).eval()
    out = work / f"{spec.replace(':', '_')}-{budget}"
    t0 = time.monotonic()
    try:
        report = compress(model, out, latency=budget, threads=threads, input_shape=shape, method="uniform", say=say)
    except SlimdeployError as exc:
        row.update(status="unreachable", reason=_reason(exc), seconds=round(time.monotonic() - t0, 1))
        return row
    row["seconds"] = round(time.monotonic() - t0, 1)
    lat = report["latency_ms"]
    row.update(status="ok", latency_ratio=lat["ratio"], latency_ratio_iqr=lat.get("ratio_iqr"),
               original_ms=lat["original"], compressed_ms=lat["compressed"], stable=lat.get("stable"),
               macs_original=report["macs"]["original"], macs_compressed=report["macs"]["compressed"],
               params_original=report["params"]["original"], params_compressed=report["params"]["compressed"],
               macs_ratio=report["macs"]["compressed"] / report["macs"]["original"],
               params_ratio=report["params"]["compressed"] / report["params"]["original"],
               latency_measurements=report["search"]["latency_measurements"],
               attempts=report["search"].get("attempts"), device=report["runtime"]["device"])

    # Baseline: torch-pruning uniform at the same MACs ratio.
    try:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        macs0, _ = count_macs_params(model, x)
        if spec not in cache:
            cache[spec] = export_onnx(model, x, work / f"{spec.replace(':', '_')}-original.onnx")
        t1 = time.monotonic()
        tp_model, tp_macs_ratio, tp_params, tp_ratio = tp_uniform(model, x, row["macs_ratio"], macs0, say=say)
        tp_path = export_onnx(tp_model, x, work / f"{spec.replace(':', '_')}-{budget}-tp.onnx")
        cmp = compare_onnx([cache[spec], tp_path], threads=threads)
        row.update(tp_pruning_ratio=tp_ratio, tp_macs_ratio=tp_macs_ratio,
                   tp_params_ratio=tp_params / row["params_original"], tp_latency_ratio=cmp.ratios[1],
                   tp_latency_ratio_iqr=cmp.ratio_iqr[1] if cmp.ratio_iqr else None, tp_stable=cmp.stable,
                   tp_original_ms=cmp.measurements[0].median_ms, tp_ms=cmp.measurements[1].median_ms,
                   tp_seconds=round(time.monotonic() - t1, 1))
    except Exception as exc:  # the baseline failing is a result too, not a crash
        row.update(tp_error=_reason(exc))
        traceback.print_exc()
    return row


def _fmt(v, spec=".3f"):
    return "—" if v is None else format(v, spec)


def render(rows: list[dict], args_line: str, not_run: list[str]) -> str:
    from results import cpu_model

    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = "?"
    sizes = sorted({r["size"] for r in rows}) or ["?"]
    threads = sorted({str(r["threads"]) for r in rows}) or ["?"]
    lines = [f"### compress (uniform search, no data) vs torch-pruning uniform at the same MACs — "
             f"input {'/'.join(f'{s}x{s}' for s in sizes)}",
             "",
             f"ORT CPU, {'/'.join(threads)} thread(s), input 1x3x{sizes[0]}x{sizes[0]}, device: {cpu_model()}, "
             f"onnxruntime {ort}. Latency ratios are medians of per-round ratios measured interleaved "
             f"(compressed or tp model vs the original) on a shared 2-core machine.",
             "",
             "| model | budget | delivered latency ratio | MACs ratio | tp-uniform @ same MACs: latency ratio (its MACs ratio) "
             "| params ratio | seconds | latency measurements |",
             "|---|---|---|---|---|---|---|---|"]
    foot = ("† the interleaved comparison hit its time cap before its ratio settled (stable=False): "
            "read it as ± its per-round IQR (kept in the JSON).")
    order = {m: i for i, m in enumerate(MODELS)}
    rows = sorted(rows, key=lambda r: (order.get(r["model"], len(order)), r["model"], -float(r["budget"].rstrip("x"))))
    for r in rows:
        model = r["model"].split(":", 1)[-1]
        if r.get("status") != "ok":
            lines.append(f"| {model} | {r['budget']} | unreachable: {r.get('reason', r.get('status'))} | — | — | — "
                         f"| {_fmt(r.get('seconds'), '.0f')} | — |")
            continue
        if "tp_latency_ratio" in r:
            tpcell = f"{r['tp_latency_ratio']:.3f}{'' if r.get('tp_stable') else '†'} ({r['tp_macs_ratio']:.3f})"
        else:
            tpcell = f"failed: {r.get('tp_error', '?')}"
        lines.append(f"| {model} | {r['budget']} | {r['latency_ratio']:.3f}{'' if r.get('stable') else '†'} | {r['macs_ratio']:.3f} | {tpcell} "
                     f"| {r['params_ratio']:.3f} | {r['seconds']:.0f} | {r['latency_measurements']} |")
    lines += ["", foot]
    if not_run:
        lines += ["", "Not run (time box): " + ", ".join(not_run) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--budgets", default=",".join(BUDGETS))
    ap.add_argument("--size", type=int, default=128, help="input height = width")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=str(HERE / "compress-rows.json"), help="rows, appended as each completes")
    ap.add_argument("--from-json", help="only re-render the RESULTS.md section from this JSON file")
    ap.add_argument("--reading", default="", help="a paragraph (or @file) placed under the table")
    ap.add_argument("--redo", action="store_true", help="re-run rows already in the JSON file")
    ap.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    budgets = [b for b in args.budgets.split(",") if b]
    command = "python benchmarks/compress.py " + " ".join(argv if argv is not None else sys.argv[1:])

    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())
    else:
        json_path = Path(args.json)
        rows = json.loads(json_path.read_text()) if json_path.exists() else []
        cache: dict = {}
        with tempfile.TemporaryDirectory(prefix="slimdeploy-bench-") as tmp:
            # Budget-major, so that a run cut short still covers every model at the first budget.
            for budget in budgets:
                for spec in models:
                    if any(r["model"] == spec and r["budget"] == budget and r["size"] == args.size
                           and r.get("threads") == args.threads for r in rows) and not args.redo:
                        print(f"=== {spec} {budget}: already in {json_path}, skipped", flush=True)
                        continue
                    print(f"=== {spec} {budget} size {args.size} threads {args.threads} ({time.strftime('%H:%M:%S')})",
                          flush=True)
                    try:
                        row = run_one(spec, budget, args.size, args.threads, Path(tmp), cache,
                                      say=lambda s: print("  " + s, flush=True))
                    except Exception as exc:
                        traceback.print_exc()
                        row = {"model": spec, "budget": budget, "size": args.size, "threads": args.threads,
                               "status": "error", "reason": _reason(exc)}
                    print("ROW " + json.dumps({k: v for k, v in row.items() if k != "device"}, default=str), flush=True)
                    rows = [r for r in rows if not (r["model"] == row["model"] and r["budget"] == row["budget"]
                                                     and r["size"] == row["size"])] + [row]
                    tmpjson = json_path.with_name(json_path.name + ".tmp")
                    tmpjson.write_text(json.dumps(rows, indent=1, default=str))
                    os.replace(tmpjson, json_path)
    wanted = [(m, b) for m in MODELS for b in BUDGETS]
    done = {(r["model"], r["budget"]) for r in rows}
    not_run = [f"{m.split(':', 1)[-1]} {b}" for m, b in wanted if (m, b) not in done]
    markdown = render(rows, command, not_run)
    reading = args.reading
    if reading.startswith("@"):
        reading = Path(reading[1:]).read_text()
    if reading:
        markdown += "\n" + reading.strip() + "\n"
    print(markdown)
    if not args.no_write:
        from results import write_section

        write_section(SECTION, markdown, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
