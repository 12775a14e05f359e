"""Accuracy–latency plots (PNG, matplotlib's Agg backend: no screen needed), written atomically."""
from __future__ import annotations

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


def front_plot(path: Path, points: Sequence[tuple[float, float]], front: Sequence[tuple[float, float]],
               chosen: Sequence[tuple[float, float, str]] = (), budgets: Sequence[float] = (),
               title: str = "", x_label: str = "predicted latency (ratio to the original)",
               y_label: str = "supernet accuracy (search split)") -> None:
    """Every evaluated candidate, the Pareto front highlighted, chosen points and budget lines marked."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if points:
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=10, c="#9aa5b1", label="evaluated")
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#1f6feb", lw=1.6,
                label="Pareto front")
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=16, c="#1f6feb")
    _finish(ax, chosen, budgets, title, x_label, y_label)
    _save(fig, plt, path)


def tradeoff_plot(path: Path, points: Sequence[tuple[float, float | None, str]], original: float | None = None,
                  title: str = "") -> None:
    """Delivered models: measured latency ratio against accuracy, one labelled point per budget."""
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
    _save(fig, plt, path)


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
