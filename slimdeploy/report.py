"""report.json and report.md for a compressed model, and the summary across several budgets."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .latency.noise import noise_note
from .space import atomic_write_text


def build_report(*, budget, limits: dict, result, final, counts: dict, accuracy: dict | None, parity, analysis,
                 runtime, input_shape: list[int], attempts: int, finetune: dict) -> dict[str, Any]:
    """report.json's content for one delivered model (the pipeline adds model, options, score, search notes)."""
    (macs0, params0), (macs1, params1) = counts["original"], counts["compressed"]
    original, compressed = final.measurements
    return {
        "method": result.method, "budget": {**budget.to_json(), "resolved": limits},
        "latency_ms": {"original": original.median_ms, "compressed": compressed.median_ms, "ratio": final.ratios[1],
                       "ratio_iqr": final.ratio_iqr[1] if final.ratio_iqr else None, "stable": final.stable,
                       "original_measurement": original.to_dict(), "compressed_measurement": compressed.to_dict()},
        "macs": {"original": macs0, "compressed": macs1}, "params": {"original": params0, "compressed": params1},
        "accuracy": accuracy,
        "verification": parity.to_json(),
        "widths": result.widths.to_json(),
        "groups": {g.name: {"full": g.width, "kept": result.widths[g.name]} for g in analysis.space},
        "runtime": {"name": runtime.name, "settings": runtime.options, "threads": original.threads,
                    "device": original.device, "input_shape": input_shape},
        "search": {"history": result.history, "attempts": attempts, "predicted": dict(result.best.costs),
                   "evaluated": len(result.evaluated)},
        "finetune": finetune,
    }


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
                 f"{noise_note(v)}" if v.get("n_test") else "no held-out configurations")
        if v.get("noise_warning"):
            error += f". Warning: {v['noise_warning']}"
        return (f"Search latency: a model fitted on {c['configurations']} configurations ({c['measured']} measured, "
                f"{c['from_database']} from the latency database); {error}.")
    if kind == "loaded":
        return f"Search latency: the latency model in {source.get('path')}."
    return "Search latency: every candidate measured." if kind == "measured" else ""


def write_reports(directory: Path, report: dict) -> None:
    atomic_write_text(directory / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(directory / "report.md", markdown(report))


def summary_rows(reports: list[dict]) -> list[dict[str, Any]]:
    """One row per delivered budget: measured latency, MACs, params, accuracy."""
    rows = []
    for r in reports:
        acc = r.get("accuracy") or {}
        rows.append({"budget": r["budget"]["latency"], "folder": r["budget"]["latency"].strip().lower(),
                     "latency_ratio": r["latency_ms"]["ratio"], "latency_ms": r["latency_ms"]["compressed"],
                     "macs": r["macs"]["compressed"], "params": r["params"]["compressed"],
                     "accuracy": acc.get("compressed"), "predicted_ratio": r["search"]["predicted"].get("latency")})
    return rows


def write_summary(directory: Path, reports: list[dict], model: str, missed: list[dict] = ()) -> dict[str, Any]:
    """summary.json, summary.md and summary.png across the budgets delivered from one search set-up;
    `missed` are the budgets asked for but not met ({"budget", "reason"})."""
    first = reports[0]
    acc = first.get("accuracy") or {}
    summary = {"model": model, "method": first["method"], "original": {
        "latency_ms": first["latency_ms"]["original"], "macs": first["macs"]["original"],
        "params": first["params"]["original"], "accuracy": acc.get("original")},
        "budgets": summary_rows(reports), "runtime": first["runtime"], "missed": list(missed)}
    lines = [f"# slimdeploy compress: {model}, {len(reports)} budgets ({first['method']})", "",
             "| budget | measured latency | ms | MACs (M) | params (M) | accuracy | folder |",
             "|---|---:|---:|---:|---:|---:|---|",
             f"| original | 1.000x | {summary['original']['latency_ms']:.3f} | {first['macs']['original'] / 1e6:.1f} "
             f"| {first['params']['original'] / 1e6:.3f} | {_fmt_acc(acc.get('original'))} | |"]
    for row in summary["budgets"]:
        lines.append(f"| {row['budget']} | {row['latency_ratio']:.3f}x | {row['latency_ms']:.3f} | {row['macs'] / 1e6:.1f} "
                     f"| {row['params'] / 1e6:.3f} | {_fmt_acc(row['accuracy'])} | {row['folder']}/ |")
    if missed:
        lines += ["", "Not delivered:"] + [f"- {m['budget']}: {m['reason']}" for m in missed]
    atomic_write_text(directory / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(directory / "summary.md", "\n".join(lines) + "\n")
    from .plots import tradeoff_plot

    points = [(r["latency_ratio"], r["accuracy"] if r["accuracy"] is not None else None, r["budget"])
              for r in summary["budgets"]]
    tradeoff_plot(directory / "summary.png", points, original=summary["original"]["accuracy"],
                  title=f"{model}: delivered models by budget")
    return summary


def _fmt_acc(value) -> str:
    return "–" if value is None else f"{value:.2%}"


def write_front(directory: Path, evaluated: list, chosen: list[tuple[str, Any]], limits: list[float],
                title: str) -> dict[str, Any]:
    """front.json (every evaluated candidate with its costs, score and Pareto flag) and front.png.

    `evaluated` are search `Candidate`s (one model, any budgets), `chosen` the (budget label,
    candidate) delivered per budget, `limits` the latency ratio targets.
    """
    from .plots import front_plot
    from .search import LATENCY, pareto_front

    unique = list({c.widths: c for c in evaluated}.values())
    front = set(c.widths for c in pareto_front(unique, LATENCY))
    data = {"candidates": [{**c.to_json(), "pareto": c.widths in front} for c in unique],
            "chosen": {label: c.to_json() for label, c in chosen}, "latency_targets": limits}
    atomic_write_text(directory / "front.json", json.dumps(data, indent=1) + "\n")
    on_front = sorted((c.costs[LATENCY], c.score) for c in unique if c.widths in front)
    front_plot(directory / "front.png", [(c.costs[LATENCY], c.score) for c in unique], on_front,
               [(c.costs[LATENCY], c.score, label) for label, c in chosen], limits, title=title)
    return data
