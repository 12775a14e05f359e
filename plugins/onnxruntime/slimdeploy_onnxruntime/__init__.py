"""The ``onnxruntime`` runtime plugin for slimdeploy: ONNX artifacts timed in ONNX Runtime sessions."""
from __future__ import annotations

from typing import Any, Sequence

from slimdeploy.errors import SlimdeployError
from slimdeploy.runtimes import Runtime
from slimdeploy.runtimes.helpers import integer, positive_int

from .timer import OPTIMIZATION_LEVELS, PROVIDER, OrtTimer, check_optimization, device_info

__all__ = ["OPTIMIZATION_LEVELS", "PROVIDER", "OnnxRuntime", "OrtTimer", "check_optimization", "device_info"]

SPINNING = "session.intra_op.allow_spinning"


def _session_config(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    config = {}
    for item in str(value).split(";"):
        if item.strip():
            key, eq, val = item.partition("=")
            if not eq:
                raise SlimdeployError(f"session_config entry {item!r} must look like key=value")
            config[key.strip()] = val.strip()
    return config


class OnnxRuntime(Runtime):
    """ONNX Runtime with a fixed execution provider, intra-op thread count and optimization level."""

    name = "onnxruntime"
    artifact_suffix = ".onnx"
    supports_node_times = True
    option_help = {
        "threads": "intra-op threads (default: every core this process may use)",
        "optimization": f"graph optimization level: {', '.join(OPTIMIZATION_LEVELS)} (default all)",
        "provider": f"execution provider (default {PROVIDER})",
        "seed": "seed of the fixed random input (default 0)",
        "session_config": "extra session config entries, key=value;key=value (with threads > 1, "
                          f"{SPINNING}=0 unless given)",
    }

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        from slimdeploy.latency.host import available_cores

        parsed: dict[str, Any] = {
            "threads": positive_int("onnxruntime", "threads", options.get("threads", available_cores())),
            "optimization": check_optimization(options.get("optimization", "all")),
            "provider": str(options.get("provider", PROVIDER)),
        }
        parsed["seed"] = integer("onnxruntime", "seed", options.get("seed", 0))
        config = _session_config(options.get("session_config") or {})
        if parsed["threads"] > 1:
            # Spinning pool threads of one session keep a core busy after its run and slow the next
            # session in an interleaved comparison (ratios off by 20% here); measure without spinning.
            config.setdefault(SPINNING, "0")
        if config:
            parsed["session_config"] = config
        return parsed

    def timer(self, artifact: Any, input_shape: Sequence[int] | None = None) -> OrtTimer:
        o = self.options
        return OrtTimer(artifact, input_shape=input_shape, threads=o["threads"], optimization=o["optimization"],
                        seed=o["seed"], session_config=o.get("session_config"), provider=o["provider"])

    def node_times(self, artifact: Any, input_shape: Sequence[int] | None = None,
                   runs: int = 20) -> list[dict[str, Any]]:
        """Per-node kernel times from ORT's profiler (see `profiling.profile_nodes`)."""
        from .profiling import profile_nodes

        o = self.options
        return profile_nodes(artifact, input_shape, runs, threads=o["threads"], optimization=o["optimization"],
                             seed=o["seed"], session_config=o.get("session_config"), provider=o["provider"])

    def device(self, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        o = self.options
        return device_info(o["optimization"], o["provider"], o["threads"], o.get("session_config"), input_shape)
