"""ONNX Runtime sessions ready to time: fixed threads, fixed input, recorded conditions (no torch)."""
from __future__ import annotations

import gc
import os
import time
from typing import Any, Sequence, Union

import numpy as np

from slimdeploy.errors import SlimdeployError
from slimdeploy.latency.host import available_cores, host_info
from slimdeploy.runtimes.helpers import onnx_source, with_input_shape

ModelSource = Union[str, "os.PathLike[str]", bytes]

PROVIDER = "CPUExecutionProvider"
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "layout", "all")
_ORT_LEVEL_NAMES = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def device_info(optimization: str = "all", provider: str = PROVIDER, threads: int | None = None,
                session_config: dict[str, str] | None = None,
                input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """What a figure was measured on: the host, runtime version, provider, optimization, threads, shape."""
    import onnxruntime as ort

    info = host_info()
    info.update({"runtime": "onnxruntime", "runtime_version": ort.__version__, "provider": provider,
                 "graph_optimization": optimization, "precision": "fp32"})
    if threads is not None:
        info["threads"] = threads
    if session_config:
        info["session_config"] = dict(session_config)
    return with_input_shape(info, input_shape)


class OrtTimer:
    """An ORT CPU session with a fixed thread count and a fixed random input, ready to time.

    `model` is a path to an .onnx file, its bytes, or an object with ``SerializeToString``
    (an ``onnx.ModelProto``). `input_shape` fills in dynamic dimensions (a dynamic batch
    alone defaults to 1); it must agree with the model's static dimensions. `threads` is
    ``intra_op_num_threads`` (default: all cores available to this process); the inter-op
    pool has one thread and execution is sequential. Threads that must share cores with a
    busy neighbour stall at every operator's barrier: on a 2-core machine with one core busy
    elsewhere, resnet18 at 64 px took 15-24 ms with 2 threads against 3.7 ms quiet (and 7 ms
    with 1 thread either way), so measure with the thread count the deployment will have free. `optimization` is one of
    ``OPTIMIZATION_LEVELS`` (ORT's default, "all", unless told otherwise).
    `session_config` adds ORT session config entries, e.g.
    ``{"session.intra_op.allow_spinning": "0"}``. `provider` is the execution provider.
    """

    def __init__(
        self,
        model: ModelSource | Any,
        input_shape: Sequence[int] | None = None,
        threads: int | None = None,
        optimization: str = "all",
        seed: int = 0,
        session_config: dict[str, str] | None = None,
        provider: str = PROVIDER,
        profile_prefix: str | None = None,
    ) -> None:
        import onnxruntime as ort

        if provider not in ort.get_available_providers():
            raise SlimdeployError(
                f"execution provider {provider!r} is not available in this onnxruntime build; "
                f"available: {', '.join(ort.get_available_providers())}")
        self.provider = provider
        self.threads = _check_threads(threads)
        self.optimization = check_optimization(optimization)
        self.session_config = dict(session_config or {})
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _ORT_LEVEL_NAMES[self.optimization])
        options.log_severity_level = 3
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        for key, value in self.session_config.items():
            options.add_session_config_entry(str(key), str(value))

        source, self.name = onnx_source(model, "onnxruntime")
        try:
            self.session = ort.InferenceSession(source, options, providers=[provider])
        except Exception as exc:  # ORT raises its own pybind exception types
            raise SlimdeployError(
                f"onnxruntime could not load {self.name}: {str(exc).strip().splitlines()[0]}"
            ) from exc

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise SlimdeployError(
                f"{self.name} has {len(inputs)} inputs ({names}); latency measurement supports "
                "models with exactly one image input")
        spec = inputs[0]
        dtype = _NUMPY_TYPES.get(spec.type)
        if dtype is None:
            raise SlimdeployError(
                f"{self.name}: input {spec.name!r} has type {spec.type}; expected a float tensor")
        self.input_name: str = spec.name
        self.input_shape: tuple[int, ...] = _resolve_shape(spec.shape, input_shape, self.name)
        self.batch: int = self.input_shape[0] if self.input_shape else 1
        rng = np.random.default_rng(seed)
        self.feed = {self.input_name: rng.standard_normal(self.input_shape).astype(dtype)}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def time_once(self) -> float:
        """Run the model once on the fixed input; wall time in milliseconds."""
        start = time.perf_counter_ns()
        self.session.run(self.output_names, self.feed)
        return (time.perf_counter_ns() - start) / 1e6

    def time_runs(self, n: int) -> list[float]:
        """`n` back-to-back runs (garbage collection paused), in milliseconds."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return [self.time_once() for _ in range(n)]
        finally:
            if was_enabled:
                gc.enable()

    def warm_up(self, runs: int = 5, seconds: float = 0.3) -> list[float]:
        """Run until both `runs` runs and `seconds` have passed; returns their times (ms)."""
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < max(1, runs) or time.perf_counter() - start < seconds:
            times.append(self.time_once())
        return times

    def device(self) -> dict[str, Any]:
        return device_info(self.optimization, self.provider, self.threads, self.session_config, self.input_shape)


def _check_threads(threads: int | None) -> int:
    if threads is None:
        return available_cores()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise SlimdeployError(f"threads must be a positive integer, got {threads!r}")
    return int(threads)


def check_optimization(level: str) -> str:
    """`level` as one of `OPTIMIZATION_LEVELS` (ORT's own names such as ORT_ENABLE_ALL accepted), or a clear error."""
    key = str(level).lower().removeprefix("ort_")
    key = {"disable_all": "disable", "enable_basic": "basic", "enable_extended": "extended",
           "enable_layout": "layout", "enable_all": "all"}.get(key, key)
    if key not in OPTIMIZATION_LEVELS:
        raise SlimdeployError(
            f"unknown graph optimization level {level!r}; use one of {', '.join(OPTIMIZATION_LEVELS)}")
    return key


def _resolve_shape(model_shape: Sequence[Any], wanted: Sequence[int] | None, name: str) -> tuple[int, ...]:
    """The concrete input shape: the model's static dims, `wanted` for dynamic ones."""
    static = [d if isinstance(d, int) and d > 0 else None for d in model_shape]
    if wanted is None:
        if static and static[0] is None:
            static[0] = 1  # a dynamic batch alone: measure batch 1
        if any(d is None for d in static):
            shown = ["?" if d is None else d for d in static]
            raise SlimdeployError(
                f"{name} has dynamic input dimensions {shown}; pass input_shape, e.g. (1, 3, 224, 224)")
        return tuple(int(d) for d in static)
    try:
        wanted_t = tuple(int(d) for d in wanted)
    except (TypeError, ValueError):
        raise SlimdeployError(f"input_shape must be a sequence of integers, got {wanted!r}") from None
    if len(wanted_t) != len(static) or any(d < 1 for d in wanted_t):
        raise SlimdeployError(
            f"input_shape {wanted_t} does not fit {name}, whose input has {len(static)} dimensions")
    for i, (model_dim, dim) in enumerate(zip(static, wanted_t)):
        if model_dim is not None and model_dim != dim:
            raise SlimdeployError(
                f"input_shape {wanted_t} disagrees with {name}: dimension {i} is fixed at {model_dim}")
    return wanted_t
