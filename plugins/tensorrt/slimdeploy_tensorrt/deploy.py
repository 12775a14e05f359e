"""TensorRT engines as deployable files (TensorRT 10 API): build one from ONNX and write it; run a saved one.

`tensorrt` is imported only through `require_tensorrt`. The engine is built by the same
`build_engine` the timer uses, so what is timed is what is delivered. Running a saved engine
binds torch CUDA tensors by name (``set_tensor_address``) and runs ``execute_async_v3`` on a
private stream, one input at a time, with the input shape set per run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from slimdeploy.errors import SlimdeployError
from slimdeploy.runtimes.helpers import onnx_source

from . import require_cuda, require_tensorrt
from .engine import build_engine, torch_dtype


def write_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, input_shape: Sequence[int] | None,
                 precision: str, workspace_mb: int | None = None) -> Path:
    """Build the engine for the ONNX file and write it to `out` (temporary name, then rename)."""
    trt = require_tensorrt()
    require_cuda()
    source, name = onnx_source(onnx_path, "tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    serialized, _, _, _ = build_engine(trt, logger, source, name, input_shape, precision, workspace_mb)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(memoryview(serialized))  # IHostMemory exposes the buffer protocol
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _io_names(trt: Any, engine: Any, path: Path) -> tuple[str, list[str]]:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(inputs) != 1 or not outputs:
        raise SlimdeployError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; expected one input")
    return inputs[0], outputs


def run_engine(path: str | os.PathLike, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The engine's first output for each input (float32 numpy arrays, on the CPU)."""
    trt = require_tensorrt()
    require_cuda()
    path = Path(path)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)  # kept alive, with the logger, as long as the engine it makes
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise SlimdeployError(f"TensorRT could not load the engine {path} (built by another TensorRT version or "
                              f"for another GPU? build it again here)")
    context = engine.create_execution_context()
    if context is None:
        raise SlimdeployError(f"TensorRT could not create an execution context for {path} (GPU memory?)")
    input_name, output_names = _io_names(trt, engine, path)
    stream = torch.cuda.Stream()
    results = []
    for array in inputs:
        x = torch.from_numpy(np.ascontiguousarray(array)).to("cuda", torch_dtype(engine.get_tensor_dtype(input_name)))
        if not context.set_input_shape(input_name, tuple(x.shape)):
            raise SlimdeployError(f"{path} does not take input shape {list(x.shape)} (it was built for "
                                  f"{list(engine.get_tensor_shape(input_name))})")
        buffers = {input_name: x}
        for name in output_names:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            buffers[name] = torch.empty(shape, dtype=torch_dtype(engine.get_tensor_dtype(name)), device="cuda")
        for name, tensor in buffers.items():
            if not context.set_tensor_address(name, tensor.data_ptr()):
                raise SlimdeployError(f"TensorRT rejected the buffer for tensor {name!r} of {path}")
        torch.cuda.synchronize()  # the input was copied on the default stream; the engine runs on its own
        if not context.execute_async_v3(stream.cuda_stream):
            raise SlimdeployError(f"TensorRT failed to run {path} (see TensorRT's messages above)")
        stream.synchronize()
        results.append(buffers[output_names[0]].float().cpu().numpy())
    return results
