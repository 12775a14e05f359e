"""TensorRT engines ready to time: ONNX → engine (TensorRT 10 API), torch CUDA buffers, CUDA-event timing.

`tensorrt` is imported only through `require_tensorrt`, so the pure helpers here (shape and
dtype handling, reading the artifact) work and are tested without it.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, Sequence

import torch

from slimdeploy.errors import SlimdeployError
from slimdeploy.latency.host import host_info
from slimdeploy.runtimes.helpers import WarmUp, onnx_source, with_input_shape

from . import require_cuda, require_tensorrt

# TensorRT DataType member name → torch dtype of the buffer bound to such a tensor.
TORCH_DTYPES = {
    "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
    "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool, "UINT8": torch.uint8,
}


def device_info(precision: str, workspace_mb: int | None = None,
                input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """What a figure was measured on: host, GPU, TensorRT version, precision, shape."""
    trt = require_tensorrt()
    info = host_info()
    info.update({"runtime": "tensorrt", "runtime_version": trt.__version__, "provider": "cuda",
                 "gpu": torch.cuda.get_device_name(), "cuda_version": torch.version.cuda, "precision": precision})
    if workspace_mb is not None:
        info["workspace_mb"] = int(workspace_mb)
    return with_input_shape(info, input_shape)


def torch_dtype(trt_dtype: Any) -> torch.dtype:
    """The torch dtype for a TensorRT ``DataType`` (by member name)."""
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in TORCH_DTYPES:
        raise SlimdeployError(f"TensorRT tensor type {name} has no torch buffer type here")
    return TORCH_DTYPES[name]


def resolve_shape(model_dims: Sequence[int], wanted: Sequence[int] | None, name: str) -> tuple[int, ...]:
    """The concrete input shape: the network's static dims (-1 = dynamic), `wanted` filling the dynamic ones.

    Without `wanted`, a dynamic batch alone is measured at 1; other dynamic dims need `wanted`.
    """
    dims = [int(d) for d in model_dims]
    if wanted is None:
        if dims and dims[0] < 0:
            dims[0] = 1
        if any(d < 0 for d in dims):
            shown = ["?" if d < 0 else d for d in dims]
            raise SlimdeployError(f"{name} has dynamic input dimensions {shown}; pass input_shape, e.g. (1, 3, 224, 224)")
        return tuple(dims)
    try:
        shape = tuple(int(d) for d in wanted)
    except (TypeError, ValueError):
        raise SlimdeployError(f"input_shape must be a sequence of integers, got {wanted!r}") from None
    if len(shape) != len(dims) or any(d < 1 for d in shape):
        raise SlimdeployError(f"input_shape {shape} does not fit {name}, whose input has {len(dims)} dimensions")
    for i, (fixed, dim) in enumerate(zip(dims, shape)):
        if fixed >= 0 and fixed != dim:
            raise SlimdeployError(f"input_shape {shape} disagrees with {name}: dimension {i} is fixed at {fixed}")
    return shape


def _parse(trt: Any, network: Any, logger: Any, source: str | bytes, name: str) -> None:
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(source) if isinstance(source, str) else parser.parse(source)
    if not ok:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no details"
        raise SlimdeployError(f"TensorRT could not parse {name}: {errors}")


def build_engine(trt: Any, logger: Any, source: str | bytes, name: str, input_shape: Sequence[int] | None,
                 precision: str, workspace_mb: int | None) -> tuple[Any, str, tuple[int, ...], bool]:
    """Serialized engine for the ONNX `source`: (engine bytes, input name, input shape, input is dynamic)."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    _parse(trt, network, logger, source, name)
    if network.num_inputs != 1:
        raise SlimdeployError(f"{name} has {network.num_inputs} inputs; latency measurement supports exactly one")
    tensor = network.get_input(0)
    shape = resolve_shape(tuple(tensor.shape), input_shape, name)
    dynamic = any(int(d) < 0 for d in tensor.shape)
    config = builder.create_builder_config()
    if dynamic:
        profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; it rounds fp32 inputs to 10-bit mantissas
    if precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise SlimdeployError(f"TensorRT {trt.__version__} has no FP16 builder flag (strongly typed networks "
                                  f"only); use precision fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SlimdeployError(f"TensorRT could not build an engine for {name} (see TensorRT's messages above)")
    return serialized, tensor.name, shape, dynamic


_PROFILER_CLASS: Any = None


def layer_profiler(trt: Any) -> Any:
    """A fresh ``trt.IProfiler`` whose ``times`` maps layer name → list of ms, one entry per profiled run."""
    global _PROFILER_CLASS
    if _PROFILER_CLASS is None:
        class LayerProfiler(trt.IProfiler):
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)
                self.times: dict[str, list[float]] = defaultdict(list)

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                self.times[layer_name].append(float(ms))

        _PROFILER_CLASS = LayerProfiler
    return _PROFILER_CLASS()


class TensorRTTimer(WarmUp):
    """A TensorRT engine with bound torch CUDA buffers and a fixed random input, ready to time.

    The engine is built here from ONNX (``precision="fp16"`` sets ``BuilderFlag.FP16``; ``"fp32"``
    clears ``BuilderFlag.TF32``, so fp32 layers compute in full fp32; the I/O stays as the ONNX
    declares it). Each run is ``execute_async_v3`` on a private stream between
    two CUDA events, read after one synchronize per batch of runs. ``threads`` is 1: host threads
    do not change an engine's GPU time.
    """

    threads = 1

    def __init__(self, artifact: Any, input_shape: Sequence[int] | None = None, *, precision: str = "fp32",
                 workspace_mb: int | None = None, seed: int = 0) -> None:
        self.trt = trt = require_tensorrt()
        require_cuda()
        self.precision, self.workspace_mb = precision, workspace_mb
        source, self.name = onnx_source(artifact, "tensorrt")
        self.logger = trt.Logger(trt.Logger.WARNING)
        serialized, self.input_name, self.input_shape, self._dynamic = build_engine(
            trt, self.logger, source, self.name, input_shape, precision, workspace_mb)
        self.batch = self.input_shape[0] if self.input_shape else 1
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise SlimdeployError(f"TensorRT could not load the engine it built for {self.name}")
        self.stream = torch.cuda.Stream()
        self.context = self._new_context()
        self.buffers = self._allocate(self.context, seed)
        self._bind(self.context)
        torch.cuda.synchronize()  # the buffers were filled on the default stream; the engine runs on its own
        self._execute(self.context)
        self.stream.synchronize()

    def _new_context(self) -> Any:
        context = self.engine.create_execution_context()
        if context is None:
            raise SlimdeployError(f"TensorRT could not create an execution context for {self.name} (GPU memory?)")
        if self._dynamic and not context.set_input_shape(self.input_name, self.input_shape):
            raise SlimdeployError(f"TensorRT rejected input shape {list(self.input_shape)} for {self.name}")
        return context

    def _allocate(self, context: Any, seed: int) -> dict[str, torch.Tensor]:
        """A CUDA tensor per I/O tensor; the input filled with seeded random values."""
        buffers = {}
        generator = torch.Generator().manual_seed(int(seed))
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise SlimdeployError(f"{self.name}: tensor {name!r} has a data-dependent shape {list(shape)}")
            dtype = torch_dtype(self.engine.get_tensor_dtype(name))
            if self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
                values = torch.randn(shape, generator=generator) if dtype.is_floating_point else torch.zeros(shape)
                buffers[name] = values.to(device="cuda", dtype=dtype).contiguous()
            else:
                buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
        return buffers

    def _bind(self, context: Any) -> None:
        for name, tensor in self.buffers.items():
            if not context.set_tensor_address(name, tensor.data_ptr()):
                raise SlimdeployError(f"TensorRT rejected the buffer for tensor {name!r} of {self.name}")

    def _execute(self, context: Any) -> None:
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise SlimdeployError(f"TensorRT failed to run {self.name} (see TensorRT's messages above)")

    def time_runs(self, n: int) -> list[float]:
        """`n` back-to-back runs on the engine's stream, in milliseconds (CUDA events)."""
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in pairs:
            start.record(self.stream)
            self._execute(self.context)
            end.record(self.stream)
        self.stream.synchronize()
        return [float(start.elapsed_time(end)) for start, end in pairs]

    def layer_times(self, runs: int = 20, warmup: int = 3) -> dict[str, float]:
        """{layer name: median ms over `runs` runs}, from TensorRT's profiler on a separate execution context.

        Layers are TensorRT's (after fusion), in execution order. Profiled runs are slower than
        plain ones; compare layers with each other, not with `time_runs`.
        """
        context = self._new_context()
        self._bind(context)
        for _ in range(warmup):
            self._execute(context)
        self.stream.synchronize()
        profiler = layer_profiler(self.trt)
        context.profiler = profiler
        runs = max(1, int(runs))
        for _ in range(runs):
            self._execute(context)
            self.stream.synchronize()
        if not profiler.times:
            raise SlimdeployError(f"TensorRT's profiler reported no layer times for {self.name}")
        return {name: statistics.median(ms[-runs:]) for name, ms in profiler.times.items()}

    def device(self) -> dict[str, Any]:
        return device_info(self.precision, self.workspace_mb, self.input_shape)
