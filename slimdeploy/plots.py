"""Plots as PNG (matplotlib's Agg backend: no screen needed): files written atomically, or bytes to embed."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, plt, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def _png(fig, plt) -> bytes:
    """The figure as PNG bytes (for embedding), closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def front_plot(path: Path, points: Sequence[tuple[float, float]], front: Sequence[tuple[float, float]],
               chosen: Sequence[tuple[float, float, str]] = (), budgets: Sequence[float] = (),
               title: str = "", x_label: str = "predicted latency (ratio to the original)",
               y_label: str = "supernet accuracy (search split)") -> None:
    """Every evaluated candidate, the Pareto front highlighted, chosen points and budget lines marked."""
    fig, plt = _front_figure(points, front, chosen, budgets, title, x_label, y_label)
    _save(fig, plt, path)


def front_png(points: Sequence[tuple[float, float]], front: Sequence[tuple[float, float]],
              chosen: Sequence[tuple[float, float, str]] = (), budgets: Sequence[float] = (), title: str = "",
              x_label: str = "predicted latency (ratio to the original)",
              y_label: str = "supernet accuracy (search split)") -> bytes:
    """`front_plot` as PNG bytes."""
    return _png(*_front_figure(points, front, chosen, budgets, title, x_label, y_label))


def _front_figure(points, front, chosen, budgets, title, x_label, y_label):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if points:
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=10, c="#9aa5b1", label="evaluated")
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#1f6feb", lw=1.6,
                label="Pareto front")
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=16, c="#1f6feb")
    _finish(ax, chosen, budgets, title, x_label, y_label)
    return fig, plt


def tradeoff_plot(path: Path, points: Sequence[tuple[float, float | None, str]], original: float | None = None,
                  title: str = "") -> None:
    """Delivered models: measured latency ratio against accuracy, one labelled point per budget."""
    fig, plt = _tradeoff_figure(points, original, title)
    _save(fig, plt, path)


def _tradeoff_figure(points, original, title):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    shown = [(x, y, label) for x, y, label in points if y is not None]
    ax.plot([p[0] for p in shown], [p[1] for p in shown], "o-", color="#1f6feb")
    for x, y, label in shown:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if original is not None:
        ax.scatter([1.0], [original], marker="s", c="#57606a", label="original")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("measured latency (ratio to the original, interleaved)")
    ax.set_ylabel("accuracy (validation split)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig, plt


def curve_plot(path: Path, curves: dict[str, Sequence[tuple[float, float]]],
               chosen: Sequence[tuple[float, float, str]] = (), budgets: Sequence[float] = (), title: str = "",
               x_label: str = "predicted latency (ratio to the original)", y_label: str = "accuracy") -> None:
    """One line per labelled curve (accuracy against a cost), chosen points starred, budget lines dashed."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, points in curves.items():
        shown = sorted(points)
        ax.plot([p[0] for p in shown], [p[1] for p in shown], "o-", ms=3, lw=1.4, label=label)
    _finish(ax, chosen, budgets, title, x_label, y_label)
    _save(fig, plt, path)


def _finish(ax, chosen, budgets, title: str, x_label: str, y_label: str) -> None:
    """Budget lines dashed, chosen points starred and labelled, axes titled, grid and legend."""
    for budget in budgets:
        ax.axvline(budget, color="#d29922", lw=1, ls="--")
    for x, y, label in chosen:
        ax.scatter([x], [y], s=70, marker="*", c="#cf222e", zorder=5)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8, color="#cf222e")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


ORIGINAL, COMPRESSED = "#8c959f", "#1f6feb"


def latency_png(original: dict, compressed: dict, title: str = "") -> bytes:
    """Median latency before and after, the IQR as error bars and each round's median as dots.

    `original` and `compressed` are measurements as report.json holds them (`median_ms`,
    `iqr_ms`, `round_medians_ms`).
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    for i, (m, color) in enumerate(((original, ORIGINAL), (compressed, COMPRESSED))):
        ax.bar([i], [m["median_ms"]], color=color, width=0.55, yerr=[[m["iqr_ms"] / 2], [m["iqr_ms"] / 2]],
               capsize=6, error_kw={"lw": 1.2})
        rounds = m.get("round_medians_ms") or []
        ax.scatter([i + 0.33] * len(rounds), rounds, s=9, c="#24292f", alpha=0.6, zorder=3)
        ax.text(i, m["median_ms"] / 2, f"{m['median_ms']:.3f} ms", ha="center", color="white", fontsize=8)
    ax.set_xticks([0, 1], ["original", "compressed"])
    ax.set_ylabel("latency (ms): median, IQR bar, round medians")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig, plt)


def size_png(macs: tuple[float, float], params: tuple[float, float], title: str = "") -> bytes:
    """MACs and parameters before and after, side by side, in millions."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
    for ax, (before, after), name in zip(axes, (macs, params), ("MACs (M)", "parameters (M)")):
        ax.bar([0, 1], [before / 1e6, after / 1e6], color=[ORIGINAL, COMPRESSED], width=0.55)
        for i, value in enumerate((before, after)):
            ax.annotate(f"{value / 1e6:,.3g}", (i, value / 1e6), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=8)
        ax.set_xticks([0, 1], ["original", "compressed"])
        ax.set_ylim(0, max(before, after, 1) / 1e6 * 1.12)  # room for the labels
        ax.set_title(f"{name}: {after / before:.2f}x" if before else name, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    return _png(fig, plt)


def widths_png(groups: dict[str, dict], title: str = "") -> bytes:
    """Per group, the kept width drawn over the full width (horizontal bars, first group on top)."""
    plt = _figure()
    names = list(groups)
    fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.24 * max(len(names), 1)))
    y = list(range(len(names)))[::-1]
    ax.barh(y, [groups[n]["full"] for n in names], color="#d0d7de", label="full")
    ax.barh(y, [groups[n]["kept"] for n in names], color=COMPRESSED, height=0.5, label="kept")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel("channels")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig, plt)


def prediction_png(points: Sequence[dict], title: str = "") -> bytes:
    """Held-out configurations: the latency model's prediction (and the MACs line's, where given) against
    the measured latency, with the diagonal of a perfect prediction."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    measured = [p["measured_ms"] for p in points]
    ax.scatter(measured, [p["predicted_ms"] for p in points], s=22, c=COMPRESSED, label="latency model", zorder=3)
    line = [(p["measured_ms"], p["macs_line_ms"]) for p in points if p.get("macs_line_ms") is not None]
    if line:
        ax.scatter([p[0] for p in line], [p[1] for p in line], s=22, marker="x", c="#cf222e",
                   label="MACs-proportional line")
    values = measured + [p["predicted_ms"] for p in points] + [p[1] for p in line]
    low, high = min(values), max(values)
    ax.plot([low, high], [low, high], color="#57606a", lw=1, ls="--", label="prediction = measurement")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig, plt)


def staircase_png(stairs: dict[str, dict], title: str = "") -> bytes:
    """Per group, the predicted latency as that group alone narrows (every other group full), the widths the
    search offers marked: flat runs are channels removed for nothing."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, s in stairs.items():
        line, = ax.plot(s["widths"], s["ms"], lw=1.2, drawstyle="steps-post", label=name)
        offered = [(w, m) for w, m in zip(s["widths"], s["ms"]) if w in set(s["offered"])]
        ax.scatter([w for w, _ in offered], [m for _, m in offered], s=12, color=line.get_color(), zorder=3)
    ax.set_xlabel("channels kept in the group")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return _png(fig, plt)


def tradeoff_png(points: Sequence[tuple[float, float | None, str]], original: float | None = None,
                 title: str = "") -> bytes:
    """`tradeoff_plot` as PNG bytes."""
    return _png(*_tradeoff_figure(points, original, title))
