"""The ``torch`` runtime plugin for slimdeploy: models timed in PyTorch itself, eager or compiled, CPU or CUDA.

Artifacts are slimdeploy model directories (`slimdeploy.checkpoint`: recipe + weights, no pickle);
`timer` also takes an in-memory ``nn.Module``. torch is imported only when it is needed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from slimdeploy.errors import SlimdeployError
from slimdeploy.runtimes import Runtime
from slimdeploy.runtimes.helpers import integer, positive_int

__all__ = ["TorchRuntime", "SIDECAR"]

DEVICES = ("cpu", "cuda")
MODES = ("eager", "compile")
PRECISIONS = ("fp32", "fp16")
# Written beside the recipe by `TorchRuntime.export`: the example input's shape, for unpruned models
# whose recipe records none.
SIDECAR = "torch_runtime.json"


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise SlimdeployError(f"torch option {name} must be one of {', '.join(choices)}, got {value!r}")
    return text


def _device(value: Any) -> str:
    """'cpu', 'cuda' or 'cuda:N'; CUDA must be usable in this process."""
    text = str(value).strip().lower()
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise SlimdeployError(f"torch option device must be cpu or cuda (or cuda:N), got {value!r}")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise SlimdeployError(
                f"torch option device={text}, but CUDA is not available to torch {torch.__version__} ({build}, "
                f"no usable GPU); use device=cpu, or run on a machine with an NVIDIA GPU")
        index = int(text.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise SlimdeployError(
                f"torch option device={text}, but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return text


class TorchRuntime(Runtime):
    """PyTorch on CPU or CUDA, eager or ``torch.compile``, at a fixed precision and CPU thread count.

    ``mode=compile`` compiles with the default backend (inductor) and runs once to trigger
    compilation; a model that fails to compile raises `SlimdeployError` (no silent fallback to
    eager, whose figure would mean something else). CUDA runs are timed with CUDA events.
    """

    name = "torch"
    artifact_suffix = ""  # a slimdeploy model directory
    option_help = {
        "device": "cpu or cuda (cuda:N for another GPU); default cpu",
        "mode": "eager or compile (torch.compile with inductor); default eager",
        "threads": "CPU intra-op threads during timed runs (default: every core this process may use)",
        "precision": "fp32, or fp16 (device=cuda only); default fp32",
        "seed": "seed of the fixed random input (default 0)",
    }

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        from slimdeploy.latency.host import available_cores

        parsed = {
            "device": _device(options.get("device", "cpu")),
            "mode": _choice("mode", options.get("mode", "eager"), MODES),
            "threads": positive_int("torch", "threads", options.get("threads", available_cores())),
            "precision": _choice("precision", options.get("precision", "fp32"), PRECISIONS),
        }
        if parsed["precision"] == "fp16" and parsed["device"] == "cpu":
            raise SlimdeployError("torch option precision=fp16 needs device=cuda; on the CPU use precision=fp32")
        parsed["seed"] = integer("torch", "seed", options.get("seed", 0))
        return parsed

    def export(self, model: Any, example_input: Any, path: Path) -> Path:
        """Save `model` as a slimdeploy model directory at `path`, with the example input's shape beside it."""
        from slimdeploy import checkpoint, zoo

        if not (getattr(model, zoo.META, None) or {}).get("source"):
            raise SlimdeployError(
                "the torch runtime stores models as slimdeploy recipes, and this model was not built from a model "
                "spec (torchvision:NAME or package.module:factory); build it from a spec, or pass the nn.Module "
                "itself to timer()/measure()")
        shape = [int(d) for d in example_input.shape]
        sidecar = json.dumps({"input_shape": shape}) + "\n"
        return checkpoint.save(model, Path(path), extra_files={SIDECAR: sidecar})

    def timer(self, artifact: Any, input_shape: Sequence[int] | None = None):
        """A `TorchTimer` for a model directory (or an ``nn.Module``) with this runtime's settings."""
        from .timer import TorchTimer

        return TorchTimer(artifact, input_shape, **self.options)

    def device(self, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        from .timer import device_info

        o = self.options
        return device_info(o["device"], o["mode"], o["precision"], o["threads"], input_shape)
