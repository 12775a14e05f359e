"""Latency on the deployment runtime, measured with its spread (no torch imported here)."""
from __future__ import annotations

from slimdeploy.latency.measure import Comparison, Measurement, compare, measure

__all__ = ["Comparison", "Measurement", "compare", "measure"]
