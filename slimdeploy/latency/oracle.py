"""Latency of candidate widths as a ratio to the original: measured on the runtime, or predicted.

`MeasuredLatency` prunes, exports and times each candidate interleaved with the original on the
runtime (cached per widths): exact but seconds per query. `PredictedLatency` asks a fitted
`LatencyModel` instead: microseconds per query, so a search can afford thousands; the pipeline
re-measures what it delivers for real either way.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from ..analysis import Analysis
from ..importance import FirstChannels
from ..prune import prune
from ..runtimes import Runtime
from ..space import Widths
from .predictor import LatencyModel


class MeasuredLatency:
    """widths → measured latency ratio to the original model, timed interleaved on `runtime`."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, analysis: Analysis, runtime: Runtime,
                 rounds: int = 6, max_seconds: float = 6.0):
        self.model, self.example, self.analysis, self.runtime = model, example_input, analysis, runtime
        self.shape = tuple(example_input.shape)
        self.rounds, self.max_seconds = rounds, max_seconds
        self._dir = tempfile.TemporaryDirectory(prefix="slimdeploy-latency-")
        self._cache: dict[tuple, float] = {}
        self.measurements = 0

    @functools.cached_property
    def reference(self) -> Path:
        """The original model's artifact (exported on first use)."""
        return self.runtime.export(self.model, self.example, self.path("original"))

    def path(self, stem: str) -> Path:
        return Path(self._dir.name) / f"{stem}{self.runtime.artifact_suffix}"

    def structure(self, widths: Widths) -> nn.Module:
        """The model pruned to `widths`; which channels stay does not change latency, so the first ones do."""
        return prune(self.model, widths, self.example, importance=FirstChannels(), analysis=self.analysis)

    def export(self, widths: Widths, stem: str = "candidate") -> Path:
        return self.runtime.export(self.structure(widths), self.example, self.path(stem))

    def ratio(self, widths: Widths) -> float:
        """Median over interleaved rounds of (candidate latency / original latency)."""
        key = tuple(sorted(widths.widths.items()))
        if key not in self._cache:
            result = self.runtime.compare([self.reference, self.export(widths)], self.shape, rounds=self.rounds,
                                          max_rounds=4 * self.rounds, max_seconds=self.max_seconds)
            self._cache[key] = float(result.ratios[1])
            self.measurements += 1
        return self._cache[key]

    def close(self) -> None:
        self._dir.cleanup()


class PredictedLatency:
    """widths → latency ratio to the full model, as a fitted latency model predicts it."""

    def __init__(self, model: LatencyModel):
        self.model = model
        self.full_ms = model.predict({})
        self.queries = 0

    def ratio(self, widths: Widths) -> float:
        self.queries += 1
        return self.model.predict(widths.widths) / self.full_ms
