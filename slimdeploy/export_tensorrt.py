"""Export a PyTorch model to a TensorRT engine file behind the same parity gate as ONNX.

The model goes to ONNX first (`export_onnx`), a runtime plugin that deploys compiled files (the
``tensorrt`` plugin, found through the registry, never imported by name) builds the engine from
it, and the engine's outputs on the parity inputs (`default_inputs`: two real photos and two
seeded random tensors for an image batch) are compared with PyTorch's. The engine file appears
only when parity holds; every step works under a temporary name beside `out`. Where TensorRT or
a GPU is missing, `check_compile` says so in one line before any work.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from . import adapters
from .errors import SlimdeployError
from .export import _eval_model, _to_numpy, default_inputs, export_onnx
from .outputs import named_tensors
from .parity import STOL, ParityReport, compare

# Default (atol, rtol) of the parity gate per engine precision: fp32 as for ONNX, fp16 for half floats.
TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (1e-2, 1e-2)}


def export_engine(model: nn.Module, example_input: torch.Tensor, out: str | os.PathLike, runtime: Any,
                  atol: float | None = None, rtol: float | None = None, opset: int = 17,
                  inputs: Sequence[torch.Tensor] | None = None, stol: float = STOL) -> ParityReport:
    """Build `runtime`'s compiled file for `model` at `out` and return the parity report.

    `runtime` is a `slimdeploy.runtimes.Runtime` with a `compiled_suffix` (e.g. the ``tensorrt``
    one, whose ``precision`` option chooses fp32 or fp16 and the default tolerances). `out` is
    written only when the report passed; raises `SlimdeployError` when this machine cannot
    compile (nothing written) or a step fails.
    """
    runtime.check_compile()
    out = Path(out)
    if out.is_dir():
        example = out / f"model{runtime.compiled_suffix}"
        raise SlimdeployError(f"{out} is a directory; give a file name such as {example}")
    precision = str(runtime.options.get("precision", "fp32"))
    default_atol, default_rtol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    atol, rtol = default_atol if atol is None else atol, default_rtol if rtol is None else rtol
    inputs = list(inputs) if inputs is not None else default_inputs(example_input)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        onnx_path = export_onnx(model, example_input, tmpdir / "model.onnx", opset=opset)
        compiled = runtime.compile(onnx_path, tmpdir / out.name, tuple(example_input.shape))
        with _eval_model(model) as whole, torch.no_grad():
            clone, graph_stops = adapters.export_view(whole)
            firsts = [named_tensors(clone(x))[0] for x in inputs]  # the engine runner returns the first output
        reference = [[_to_numpy(t)] for _, t in firsts]
        candidate = [[out] for out in runtime.run_compiled(compiled, [_to_numpy(x) for x in inputs])]
        figures = compare(reference, candidate, [firsts[0][0]], atol, rtol, stol)
        report = ParityReport(n_inputs=len(inputs), atol=atol, rtol=rtol, stol=stol, runtime=runtime.describe(),
                              isolated=False, graph_stops=graph_stops, **figures)
        if report.passed:
            os.replace(compiled, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return report


def export_tensorrt(model: nn.Module, example_input: torch.Tensor, out: str | os.PathLike, precision: str = "fp32",
                    workspace_mb: int | None = None, atol: float | None = None,
                    rtol: float | None = None, stol: float = STOL) -> ParityReport:
    """A TensorRT engine file (fp32 or fp16) for `model` at `out`, behind the parity gate; see `export_engine`.

    Example::

        report = export_tensorrt(model, torch.randn(1, 3, 224, 224), "d/model.engine", precision="fp16")
        report.raise_if_failed()
    """
    from .runtimes import get_runtime

    options: dict[str, Any] = {"precision": precision}
    if workspace_mb is not None:
        options["workspace_mb"] = workspace_mb
    return export_engine(model, example_input, out, get_runtime("tensorrt", options), atol=atol, rtol=rtol,
                         stol=stol)
