"""Small pieces every runtime plugin needs: option parsing, ONNX sources, warm-up (no torch)."""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

from ..errors import SlimdeployError


def positive_int(runtime: str, option: str, value: Any, unit: str = "") -> int:
    """`value` (an int or its text, as from the command line) as a positive integer, or a clear error."""
    number = None
    if not isinstance(value, bool):
        try:
            number = int(str(value).strip())
        except ValueError:
            pass
    if number is None or number < 1:
        raise SlimdeployError(f"{runtime} option {option} must be a positive integer{unit}, got {value!r}")
    return number


def integer(runtime: str, option: str, value: Any) -> int:
    """`value` (an int or its text) as an integer, or a clear error."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SlimdeployError(f"{runtime} option {option} must be an integer, got {value!r}") from None


def with_input_shape(info: dict[str, Any], input_shape: Sequence[int] | None) -> dict[str, Any]:
    """`info` with the input shape and batch a figure was measured at (unchanged without a shape)."""
    if input_shape is not None:
        info["input_shape"] = [int(d) for d in input_shape]
        info["batch"] = int(input_shape[0]) if len(input_shape) else 1
    return info


def onnx_source(artifact: Any, runtime: str) -> tuple[str | bytes, str]:
    """(a path to load from, or the model's bytes; a name for messages) of an ONNX artifact."""
    if hasattr(artifact, "SerializeToString"):
        return artifact.SerializeToString(), "<onnx model>"
    if isinstance(artifact, (bytes, bytearray, memoryview)):
        return bytes(artifact), "<onnx bytes>"
    if isinstance(artifact, (str, os.PathLike)):
        path = os.fspath(artifact)
        if not os.path.isfile(path):
            raise SlimdeployError(f"ONNX file not found: {path}")
        return path, path
    raise SlimdeployError(f"the {runtime} runtime takes an ONNX file path, its bytes or an onnx.ModelProto, "
                          f"got {type(artifact).__name__}")


class WarmUp:
    """`warm_up` for timers whose `time_runs(1)` times one run."""

    def time_runs(self, n: int) -> list[float]:  # pragma: no cover - provided by the timer
        raise NotImplementedError

    def warm_up(self, runs: int = 5, seconds: float = 0.3) -> list[float]:
        """Run until both `runs` runs and `seconds` have passed; returns their times (ms)."""
        times: list[float] = []
        begin = time.perf_counter()
        while len(times) < max(1, runs) or time.perf_counter() - begin < seconds:
            times.extend(self.time_runs(1))
        return times
