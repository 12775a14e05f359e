"""Adaptive width (ALGORITHMS.md §4): widths learned by backpropagation, truncatable at any width."""
from __future__ import annotations

from .distribution import importance, inverse_rate, pmf, quantile_width, rate, rate_for_width
from .network import AdaptiveWidth

__all__ = ["AdaptiveWidth", "importance", "inverse_rate", "pmf", "quantile_width", "rate", "rate_for_width"]
