"""The ``tensorrt`` runtime plugin for slimdeploy: ONNX artifacts built into TensorRT engines, timed on the GPU.

This package imports without TensorRT (and without a GPU): `tensorrt` is imported only when an
engine is built, and its absence is a `SlimdeployError` saying how to get it. Needs TensorRT 10+
(the tensor-name API) and torch with CUDA (buffers, streams and CUDA events). Besides timing, it
writes engines as deployable files (`compile`) and runs them (`run_compiled`), which
`slimdeploy.export_tensorrt` uses behind the parity gate.
"""
from __future__ import annotations

from typing import Any, Sequence

from slimdeploy.errors import SlimdeployError
from slimdeploy.runtimes import Runtime
from slimdeploy.runtimes.helpers import integer, positive_int

__all__ = ["TensorRTRuntime", "missing", "require_tensorrt", "require_cuda"]

PRECISIONS = ("fp32", "fp16")
MIN_MAJOR = 10


def require_tensorrt() -> Any:
    """The `tensorrt` module (10 or newer), or a `SlimdeployError` saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise SlimdeployError(
            "TensorRT is not installed; pip install tensorrt on a machine with an NVIDIA GPU") from None
    major = str(getattr(trt, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < MIN_MAJOR:
        raise SlimdeployError(
            f"TensorRT {trt.__version__} is installed; the tensorrt runtime needs TensorRT {MIN_MAJOR} or newer "
            f"(pip install -U tensorrt)")
    return trt


def require_cuda() -> Any:
    """torch with a usable CUDA device (initialised), or a `SlimdeployError`."""
    import torch

    if not torch.cuda.is_available():
        raise SlimdeployError(
            f"the tensorrt runtime needs an NVIDIA GPU, and CUDA is not available to torch {torch.__version__}")
    torch.cuda.init()
    return torch


def missing() -> list[str]:
    """What this machine lacks to build and run engines, one phrase each (empty: nothing)."""
    import torch

    problems = []
    try:
        require_tensorrt()
    except SlimdeployError as exc:
        problems.append(str(exc))
    if not torch.cuda.is_available():
        problems.append(f"there is no NVIDIA GPU (CUDA is not available to torch {torch.__version__})")
    return problems


def _precision(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in PRECISIONS:
        raise SlimdeployError(f"tensorrt option precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return text


def _workspace_mb(value: Any) -> int | None:
    if value is None or str(value).strip().lower() in ("", "default", "none"):
        return None
    return positive_int("tensorrt", "workspace_mb", value, " (MiB)")


class TensorRTRuntime(Runtime):
    """TensorRT engines built from ONNX (fp32, or fp16 where TensorRT finds it faster), timed with CUDA events.

    `export` is the default ONNX export; `timer` builds the engine (seconds to minutes),
    and `layer_times` reports TensorRT's per-layer profile.
    """

    name = "tensorrt"
    artifact_suffix = ".onnx"
    compiled_suffix = ".engine"
    option_help = {
        "precision": "fp32, or fp16 (lets TensorRT choose fp16 kernels); default fp32",
        "workspace_mb": "builder workspace limit in MiB (default: TensorRT's, the device memory)",
        "seed": "seed of the fixed random input (default 0)",
    }

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        parsed: dict[str, Any] = {"precision": _precision(options.get("precision", "fp32"))}
        workspace = _workspace_mb(options.get("workspace_mb"))
        if workspace is not None:
            parsed["workspace_mb"] = workspace
        parsed["seed"] = integer("tensorrt", "seed", options.get("seed", 0))
        return parsed

    def timer(self, artifact: Any, input_shape: Sequence[int] | None = None):
        """A `TensorRTTimer`: the ONNX `artifact` (path, bytes or ModelProto) built into an engine."""
        require_tensorrt()
        require_cuda()
        from .engine import TensorRTTimer

        o = self.options
        return TensorRTTimer(artifact, input_shape, precision=o["precision"], workspace_mb=o.get("workspace_mb"),
                             seed=o["seed"])

    def check_compile(self) -> None:
        """One line naming everything missing here (TensorRT, a GPU), before any work is done."""
        problems = missing()
        if problems:
            raise SlimdeployError(f"cannot build a TensorRT engine on this machine: {'; and '.join(problems)}")

    def compile(self, onnx_path: Any, out: Any, input_shape: Sequence[int] | None = None) -> Any:
        """Build the engine for `onnx_path` with this runtime's precision and write it to `out`."""
        self.check_compile()
        from .deploy import write_engine

        return write_engine(onnx_path, out, input_shape, self.options["precision"], self.options.get("workspace_mb"))

    def run_compiled(self, path: Any, inputs: Sequence[Any]) -> list[Any]:
        """The first output of the engine at `path` for each numpy input."""
        self.check_compile()
        from .deploy import run_engine

        return run_engine(path, inputs)

    def layer_times(self, artifact: Any, input_shape: Sequence[int] | None = None, runs: int = 20) -> dict[str, float]:
        """{TensorRT layer name: median ms over `runs` profiled runs} for `artifact`."""
        return self.timer(artifact, input_shape).layer_times(runs)

    def device(self, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        require_tensorrt()
        require_cuda()
        from .engine import device_info

        return device_info(self.options["precision"], self.options.get("workspace_mb"), input_shape)
