"""Latency of ONNX files on ONNX Runtime: the measurement protocol on timers the plugin builds.

`measure`/`compare` (slimdeploy.latency.measure) take a runtime's timers; these two build them from
file paths through the runtime registry, so the protocol module never reaches for a runtime itself.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from ..runtimes import get_runtime
from .measure import Comparison, Measurement, compare, measure


def _onnxruntime(threads: int | None, optimization: str, seed: int, session_config: dict | None):
    options: dict[str, Any] = {"optimization": optimization, "seed": seed}
    if threads is not None:
        options["threads"] = threads
    if session_config:
        options["session_config"] = dict(session_config)
    return get_runtime("onnxruntime", options)


def measure_onnx(path: str | os.PathLike, input_shape: Sequence[int] | None = None, threads: int | None = None, *,
                 optimization: str = "all", seed: int = 0, session_config: dict[str, str] | None = None,
                 **protocol: Any) -> Measurement:
    """`measure` of the ONNX file at `path` on ONNX Runtime (CPU) with these session settings."""
    return measure(_onnxruntime(threads, optimization, seed, session_config).timer(path, input_shape), **protocol)


def compare_onnx(paths: Sequence[str | os.PathLike], input_shape: Sequence[int] | None = None,
                 threads: int | None = None, *, optimization: str = "all", seed: int = 0,
                 session_config: dict[str, str] | None = None, **protocol: Any) -> Comparison:
    """`compare` of ONNX files interleaved on ONNX Runtime (CPU); ratios against `paths[0]`."""
    rt = _onnxruntime(threads, optimization, seed, session_config)
    return compare([rt.timer(p, input_shape) for p in paths], **protocol)
