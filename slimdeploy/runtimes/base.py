"""What a runtime plugin provides: export a model to its artifact, load it, time it.

The core never imports a runtime library; it speaks to runtimes through this interface, and
plugins register themselves under the entry-point group ``slimdeploy.runtimes`` (see
`registry`). Every plugin is timed with the same protocol (`slimdeploy.latency.measure`): a
plugin only has to hand out a *timer*, an object with

* ``threads``, ``batch``, ``input_shape`` attributes,
* ``time_runs(n) -> list[float]`` (milliseconds of n back-to-back runs),
* ``warm_up(runs, seconds) -> list[float]``,
* ``device() -> dict`` (what the figure was measured on).

A runtime that deploys a compiled file rather than the ONNX itself (TensorRT: an engine) sets
`compiled_suffix` and implements `check_compile`, `compile` and `run_compiled`;
`slimdeploy.export_tensorrt` builds on them behind the parity gate.

This module must not import torch: the remote agent imports it without torch installed.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from ..errors import SlimdeployError
from .helpers import with_input_shape

# Keys of a device description that name the conditions of a figure; a change in any of them
# makes earlier figures incomparable (volatile facts such as platform strings stay out).
FINGERPRINT_KEYS = ("cpu", "logical_cores", "gpu", "runtime", "runtime_version", "provider",
                    "precision", "threads", "graph_optimization", "mode", "batch", "input_shape",
                    "session_config", "remote_device")


def device_fingerprint(device: Mapping[str, Any]) -> str:
    """Short stable hash of the parts of `device` that decide what a latency figure means."""
    chosen = {k: device[k] for k in FINGERPRINT_KEYS if k in device}
    text = json.dumps(chosen, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Runtime(ABC):
    """One deployment runtime with fixed settings (threads, precision, ...).

    `options` are strings from the command line or values from Python; `parse_options`
    validates them and fills defaults, and what it returns is recorded with every figure.
    """

    name: ClassVar[str] = "runtime"
    artifact_suffix: ClassVar[str] = ".onnx"
    option_help: ClassVar[Mapping[str, str]] = {}
    supports_node_times: ClassVar[bool] = False
    compiled_suffix: ClassVar[str | None] = None  # e.g. ".engine": the runtime deploys a compiled file

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.option_help))
        if unknown:
            known = ", ".join(sorted(self.option_help)) or "none"
            raise SlimdeployError(
                f"runtime {self.name!r} has no option {', '.join(map(repr, unknown))}; its options: {known}")
        self.options: dict[str, Any] = self.parse_options(options)

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validated options with defaults filled in (override in plugins that take options)."""
        return options

    def describe(self) -> str:
        settings = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}({settings})" if settings else self.name

    # -- artifacts

    def export(self, model: Any, example_input: Any, path: Path) -> Path:
        """Write `model`'s artifact for this runtime to `path` (default: ONNX, legacy exporter first)."""
        from ..export import export_onnx  # torch lives behind this import

        return export_onnx(model, example_input, Path(path))

    @abstractmethod
    def timer(self, artifact: Any, input_shape: Sequence[int] | None = None) -> Any:
        """Load `artifact` (a path, or bytes where the runtime takes them) ready to time."""

    def check_compile(self) -> None:
        """Raise `SlimdeployError` saying, in one line, what this machine lacks to `compile` (cheap)."""
        if self.compiled_suffix is None:
            raise SlimdeployError(f"runtime {self.name!r} runs ONNX files as they are; it compiles nothing")

    def compile(self, onnx_path: Path, out: Path, input_shape: Sequence[int] | None = None) -> Path:
        """Write the deployable file built from the ONNX file `onnx_path` to `out` (runtimes with
        `compiled_suffix`)."""
        self.check_compile()
        raise SlimdeployError(f"runtime {self.name!r} does not implement compile")

    def run_compiled(self, path: Path, inputs: Sequence[Any]) -> list[Any]:
        """The first output (a numpy array) of the compiled file at `path` for each numpy input."""
        self.check_compile()
        raise SlimdeployError(f"runtime {self.name!r} does not implement run_compiled")

    # -- conditions

    def device(self, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        """The machine and settings a figure from this runtime is measured under."""
        from ..latency.host import host_info

        info = host_info()
        info.update({"runtime": self.name, **self.options})
        return with_input_shape(info, input_shape)

    def fingerprint(self, input_shape: Sequence[int] | None = None) -> str:
        return device_fingerprint(self.device(input_shape))

    # -- the measurement protocol, shared by every plugin

    def measure(self, artifact: Any, input_shape: Sequence[int] | None = None, **protocol: Any):
        """`slimdeploy.latency.measure` on this runtime's timer for `artifact`."""
        from ..latency.measure import measure

        return measure(self.timer(artifact, input_shape), **protocol)

    def compare(self, artifacts: Sequence[Any], input_shape: Sequence[int] | None = None, **protocol: Any):
        """Interleaved comparison (`slimdeploy.latency.measure.compare`); ratios against artifacts[0]."""
        from ..latency.measure import compare

        return compare([self.timer(a, input_shape) for a in artifacts], **protocol)

    def node_times(self, artifact: Any, input_shape: Sequence[int] | None = None,
                   runs: int = 20) -> list[dict[str, Any]]:
        """Per-node times ``[{"name", "op", "in_channels", "out_channels", "ms"}]`` where the runtime
        reports them (see `supports_node_times`)."""
        raise SlimdeployError(f"runtime {self.name!r} does not report per-node times")

    def close(self) -> None:
        """Release what the runtime holds (connections, devices)."""
