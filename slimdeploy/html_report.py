"""report.html beside report.md (and summary.html beside summary.md): one self-contained page.

Plots are embedded as base64 PNG and styles are inline, so the page opens from any folder, in
any browser, offline; it references nothing outside itself but the budget folders' own pages.
"""
from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from . import plots, tomlio
from .report import markdown
from .space import atomic_write_text

__all__ = ["page", "summary_page", "write_html", "write_summary_html"]

_STYLE = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:60em;color:#24292f;
padding:0 1em}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.4em 1em .4em 0;vertical-align:top}
.muted{color:#57606a}"""


def write_html(directory: Path, report: dict, front: dict | None = None, label: str | None = None) -> None:
    """report.html for one delivered model; `front` is front.json's content and `label` this budget's key in it."""
    atomic_write_text(Path(directory) / "report.html", page(report, front, label))


def write_summary_html(directory: Path, summary: dict, front: dict | None = None) -> None:
    """summary.html across the budgets delivered from one search set-up."""
    atomic_write_text(Path(directory) / "summary.html", summary_page(summary, front))


def page(report: dict, front: dict | None = None, label: str | None = None) -> str:
    """The HTML of one delivered model's report."""
    lat, macs, params = report["latency_ms"], report["macs"], report["params"]
    title = f"slimdeploy compress: {report['model']}"
    body = [f"<h1>{escape(title)}</h1>", _markdown_html(markdown(report)), "<h2>Latency, MACs, parameters</h2>",
            _img(plots.latency_png(lat["original_measurement"], lat["compressed_measurement"],
                                   f"measured on {report['runtime']['name']}, interleaved: {lat['ratio']:.3f}x"),
                 "latency before and after"),
            _img(plots.size_png((macs["original"], macs["compressed"]), (params["original"], params["compressed"])),
                 "MACs and parameters before and after")]
    points = held_out_points(report["search"].get("latency_source") or {})
    if points:
        v = (report["search"]["latency_source"] or {}).get("validation") or {}
        note = f"MAPE {v['mape']:.1%}" if "mape" in v else ""
        body += ["<h2>Latency model on held-out configurations</h2>",
                 _img(plots.prediction_png(points, f"{len(points)} held-out configurations {note}".strip()),
                      "predicted against measured latency")]
    stairs = (report["search"].get("latency_source") or {}).get("staircase")
    if stairs:
        body += ["<h2>Latency staircase of the groups that matter</h2>",
                 _img(plots.staircase_png(stairs, f"the {len(stairs)} groups saving the most; dots: widths offered"),
                      "predicted latency over each group's widths")]
    if front:
        body += ["<h2>Accuracy–latency front of the search</h2>", _img(_front_png(front, label), "search front")]
    body += ["<h2>Widths</h2>", _img(plots.widths_png(report["groups"], "kept against full width per group"),
                                     "kept and full width per group")]
    if report.get("config"):
        body += ["<h2>Configuration</h2>", "<p class=muted>config.toml in the output folder repeats this run: "
                 "<code>slimdeploy compress --config OUT/config.toml</code></p>",
                 f"<pre>{escape(tomlio.dumps(report['config']))}</pre>"]
    return _document(title, body)


def summary_page(summary: dict, front: dict | None = None) -> str:
    """The HTML of the summary across budgets, each row linked to its folder's report.html."""
    title = f"slimdeploy compress: {summary['model']}, {len(summary['budgets'])} budgets ({summary['method']})"
    o = summary["original"]
    rows = [["budget", "measured latency", "ms", "MACs (M)", "params (M)", "accuracy", "report"],
            ["original", "1.000x", f"{o['latency_ms']:.3f}", f"{o['macs'] / 1e6:.1f}", f"{o['params'] / 1e6:.3f}",
             _acc(o.get("accuracy")), ""]]
    for r in summary["budgets"]:
        rows.append([r["budget"], f"{r['latency_ratio']:.3f}x", f"{r['latency_ms']:.3f}", f"{r['macs'] / 1e6:.1f}",
                     f"{r['params'] / 1e6:.3f}", _acc(r["accuracy"]), (r["folder"] + "/report.html", "report.html")])
    body = [f"<h1>{escape(title)}</h1>", _table(rows),
            _img(plots.tradeoff_png([(r["latency_ratio"], r["accuracy"], r["budget"]) for r in summary["budgets"]],
                                    o.get("accuracy"), "delivered models by budget"), "accuracy against latency")]
    if summary.get("missed"):
        body += ["<h2>Not delivered</h2>", "<ul>" + "".join(
            f"<li>{escape(m['budget'])}: {escape(m['reason'])}</li>" for m in summary["missed"]) + "</ul>"]
    if front:
        body += ["<h2>Accuracy–latency front of the search</h2>", _img(_front_png(front, None), "search front")]
    return _document(title, body)


def held_out_points(source: dict) -> list[dict[str, Any]]:
    """The latency model's held-out (measured, predicted) points: from the fit in this run, or from the
    validation.json of the `profile` directory it was loaded from."""
    if source.get("kind") == "fitted":
        return (source.get("validation") or {}).get("held_out") or []
    if source.get("kind") == "loaded" and source.get("path"):
        try:
            return json.loads((Path(source["path"]) / "validation.json").read_text()).get("held_out") or []
        except (OSError, ValueError):
            return []
    return []


def _front_png(front: dict, label: str | None) -> bytes:
    candidates = front["candidates"]
    on_front = sorted((c["costs"]["latency"], c["score"]) for c in candidates if c["pareto"])
    chosen = [(c["costs"]["latency"], c["score"], name) for name, c in front["chosen"].items()
              if label is None or name == label]
    return plots.front_png([(c["costs"]["latency"], c["score"]) for c in candidates], on_front, chosen,
                           front.get("latency_targets", []), title="every evaluated candidate; delivered point starred")


def _markdown_html(text: str) -> str:
    """report.md's body (paragraphs, tables, "- " lists; its "# " title dropped) as HTML."""
    out, table, items = [], [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):  # the separator row
                table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if table:
            out.append(_table(table))
            table = []
        if line.startswith("- "):
            items.append(f"<li>{escape(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line and not line.startswith("# "):
            out.append(f"<p>{escape(line)}</p>")
    return "\n".join(out)


def _table(rows: list[list]) -> str:
    def cell(value, tag):
        if isinstance(value, tuple):  # (relative link, text)
            return f'<{tag}><a href="{escape(value[0])}">{escape(value[1])}</a></{tag}>'
        return f"<{tag}>{escape(str(value))}</{tag}>"

    head = "".join(cell(v, "th") for v in rows[0])
    body = "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>" for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _acc(value) -> str:
    return "–" if value is None else f"{value:.2%}"


def _document(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
            f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
