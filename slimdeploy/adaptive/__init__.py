"""Adaptive width (ALGORITHMS.md §4): widths learned by backpropagation, truncatable at any width.

The names below load on first use, so that `adaptive.config` (the settings) imports without torch.
"""
from __future__ import annotations

import importlib

_NAMES = {"AdaptiveWidth": "network", **{n: "distribution" for n in (
    "importance", "inverse_rate", "pmf", "quantile_width", "rate", "rate_for_width")}}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
