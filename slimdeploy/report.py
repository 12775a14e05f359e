"""report.json and report.md for a compressed model."""
from __future__ import annotations

import json
from pathlib import Path


def _fmt(value, scale=1.0, digits=2, unit=""):
    return "–" if value is None else f"{value / scale:,.{digits}f}{unit}"


def markdown(report: dict) -> str:
    """A short human-readable summary of report.json."""
    lat, macs, params, acc = report["latency_ms"], report["macs"], report["params"], report["accuracy"]
    rt = report["runtime"]
    lines = [
        f"# slimdeploy compress: {report['model']}",
        "",
        f"Budget: latency {report['budget']['latency']} (≤ {report['budget']['resolved']['latency_ms']:.3f} ms)"
        + (f", MACs {report['budget']['macs']}" if report["budget"]["macs"] else "")
        + (f", params {report['budget']['params']}" if report["budget"]["params"] else "")
        + f"; method {report['method']}.",
        f"Runtime: {rt['name']}, {rt['threads']} threads, input {tuple(rt['input_shape'])}, "
        f"{rt['device'].get('cpu', rt['device'].get('cpu_model', ''))}.",
        "",
        "| | original | compressed | ratio |",
        "|---|---:|---:|---:|",
        f"| latency (ms, median, interleaved) | {_fmt(lat['original'], digits=3)} | {_fmt(lat['compressed'], digits=3)} "
        f"| {lat['ratio']:.3f} |",
        f"| MACs (M) | {_fmt(macs['original'], 1e6, 1)} | {_fmt(macs['compressed'], 1e6, 1)} "
        f"| {macs['compressed'] / macs['original']:.3f} |",
        f"| params (M) | {_fmt(params['original'], 1e6, 3)} | {_fmt(params['compressed'], 1e6, 3)} "
        f"| {params['compressed'] / params['original']:.3f} |",
    ]
    if acc:
        lines.append(f"| accuracy ({acc['dataset']}, {acc['n_val']} held out) | {acc['original']:.2%} "
                     f"| {acc['compressed']:.2%} | |")
    v = report["verification"]
    lines += ["", f"ONNX parity: max abs error {v['max_abs_error']}, top-1 agreement {v['top1_agreement']}, "
                  f"{'passed' if v['passed'] else 'FAILED'}.",
              f"Search score: {report['score']['kind']} = {report['score']['value']:.4f}.",
              _latency_source_line(report["search"].get("latency_source") or {}), "",
              "| group | full | kept | note |", "|---|---:|---:|---|"]
    flat = set((report["search"].get("latency_source") or {}).get("groups_saving_nothing", []))
    lines += [f"| {name} | {g['full']} | {g['kept']} | {'pruning saves nothing measurable' if name in flat else ''} |"
              for name, g in report["groups"].items()]
    notes = report["search"]["notes"]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _latency_source_line(source: dict) -> str:
    """Where the search's latency figures came from, with the fitted model's held-out error."""
    kind = source.get("kind")
    if kind == "fitted":
        v, c = source["validation"], source["cost"]
        error = (f"{v['within_5pct']:.0%} of {v['n_test']} held-out configurations within ±5%, MAPE {v['mape']:.1%}"
                 if v.get("n_test") else "no held-out configurations")
        return (f"Search latency: a model fitted on {c['configurations']} configurations ({c['measured']} measured, "
                f"{c['from_database']} from the latency database); {error}.")
    if kind == "loaded":
        return f"Search latency: the latency model in {source.get('path')}."
    return "Search latency: every candidate measured." if kind == "measured" else ""


def write_reports(directory: Path, report: dict) -> None:
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (directory / "report.md").write_text(markdown(report))
