"""Measured latency of candidate widths: prune, export to ONNX, time against the original interleaved.

Each candidate is timed in the same run as a fixed reference (the original model) and reported as
a ratio to it, which cancels the drift of a shared machine (shared/LATENCY-NOTES.md). Results are
cached per widths. Search-time measurements are capped at a few seconds each; the pipeline's final
check of the delivered model uses the full protocol.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from ..analysis import Analysis
from ..export import export_onnx
from ..importance import FirstChannels
from ..prune import prune
from ..space import Widths
from .measure import compare


class LatencyOracle:
    """widths → measured latency ratio to the original model (and milliseconds)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, analysis: Analysis,
                 threads: int | None = None, rounds: int = 6, max_seconds: float = 6.0):
        self.model, self.example, self.analysis = model, example_input, analysis
        self.threads, self.rounds, self.max_seconds = threads, rounds, max_seconds
        self._dir = tempfile.TemporaryDirectory(prefix="slimdeploy-latency-")
        self.reference = export_onnx(model, example_input, Path(self._dir.name) / "original.onnx")
        self._cache: dict[tuple, float] = {}
        self.measurements = 0

    def export(self, widths: Widths, path: Path) -> Path:
        # Which channels stay does not change latency, so structure alone is pruned here.
        pruned = prune(self.model, widths, self.example, importance=FirstChannels(), analysis=self.analysis)
        return export_onnx(pruned, self.example, path)

    def ratio(self, widths: Widths) -> float:
        """Median over interleaved rounds of (candidate latency / original latency)."""
        key = tuple(sorted(widths.widths.items()))
        if key not in self._cache:
            path = self.export(widths, Path(self._dir.name) / "candidate.onnx")
            result = compare([self.reference, path], threads=self.threads, rounds=self.rounds,
                             max_rounds=4 * self.rounds, max_seconds=self.max_seconds)
            self._cache[key] = float(result.ratios[1])
            self.measurements += 1
        return self._cache[key]

    def close(self) -> None:
        self._dir.cleanup()
